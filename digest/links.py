"""Tracked links: short tokens, signed with `DIGEST_SECRET_KEY`, that name an object and an action.

A token is ``<action><id in base 36>.<owner>.<HMAC-SHA256>``, for instance
``c2s.9f86d081884c7d65.kO3…``. The owner is the random `link_id` of the subscriber the link was
made for; the HMAC key is derived from the secret key *and* this installation's random id
(`models.Installation`). So a token

- can be neither forged nor altered without the key, and earlier keys stay valid after a
  rotation (`DIGEST_OLD_SECRET_KEYS`);
- opens nothing in another installation that shares the key, nor in this one after its
  database was reset (a new installation id);
- opens its object only while that object belongs to the subscriber it was mailed to, so an id
  re-used after a restore from a backup does not act on someone else (`LinkRef.opens`).

Links of the first format, ``<action><id>.<HMAC>`` (the key alone, no installation, no owner),
were mailed by versions before this one. They stay valid for the digests and items that existed
when the database was upgraded (`Installation.legacy_*`), and for nothing created since, so the
reset and shared-key holes stay shut for every new email while no old email goes dead. A fresh
database accepts none. (Two installations that shared a key *before* the upgrade cannot be told
apart by their old links; only new links carry the installation.)

| action | names | URL |
|---|---|---|
| ``c`` | a digest item | ``/c/{token}``: click, redirect to the paper |
| ``d`` | a digest item | ``/d/{token}``: click on the PDF link, redirect to the paper's PDF |
| ``f`` | a digest item | ``/f/{token}?v=up|down``: more / less like this (``POST``: undo) |
| ``u`` | a digest | ``/u/{token}``: unsubscribe |
| ``v`` | a digest | ``/v/{token}``: the digest in the browser |
| ``p`` | a subscriber | ``/p/{token}``: the preferences page |

A key must be strong (`key_bits`): with a weak one, one emailed token is enough to recover the
key and forge any link.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote_plus, urlsplit

from itsdangerous import BadSignature, Signer
from itsdangerous.encoding import base64_encode

ACTIONS = {"c": "click", "d": "pdf", "f": "feedback", "u": "unsubscribe", "v": "view", "p": "preferences"}
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
#: The largest id a token may name: the range of an INTEGER key on PostgreSQL (and well within
#: SQLite's), so a validly signed token with a huge id is "not found", never a database error.
MAX_ID = 2**31 - 1
_OWNER = re.compile(r"[0-9a-f]{8,32}")
#: The entropy a signing key must have (`key_bits`): 32 bytes.
MIN_KEY_BITS = 256
#: Where a paper with no link of its own is looked up by its title (a Hugging Face trending paper
#: that matches no known arXiv paper).
PAPER_SEARCH = "https://huggingface.co/papers?q="


def _base36(number: int) -> str:
    if number < 0:
        raise ValueError("ids are not negative")
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = _DIGITS[digit] + text
        if number == 0:
            return text


def key_bits(key: str) -> float:
    """An estimate of the entropy of a key, in bits, that refuses short, repeated and patterned keys.

    The key's characters count by the alphabet they come from (hexadecimal 4 bits each, base64
    6, otherwise by the classes used: lower and upper case letters, digits, punctuation); a
    key that is a shorter key repeated counts as that shorter key; and a key whose characters
    are spread less evenly than a random one's (``aaaa…``, ``abab…``) counts by its Shannon
    entropy instead. `secrets.token_urlsafe(32)` (what `digest init` writes) has 258 bits.
    """
    if not key:
        return 0.0
    period = _period(key)
    unit = key[:period] if 2 * period <= len(key) else key  # a key that is a shorter one repeated
    bits = len(unit) * math.log2(_alphabet(unit))
    counts = Counter(key)
    shannon = -sum(n / len(key) * math.log2(n / len(key)) for n in counts.values())
    ceiling = min(math.log2(_alphabet(key)), math.log2(len(key))) if len(key) > 1 else 0.0
    if shannon < 0.75 * ceiling or len(counts) == 1:
        bits = min(bits, len(unit) * shannon)
    return max(bits, 0.0)


def _period(text: str) -> int:
    """The length of the shortest prefix of which `text` is a repetition (a partial last one allowed)."""
    border = [0] * len(text)  # Knuth-Morris-Pratt failure function
    k = 0
    for i in range(1, len(text)):
        while k and text[i] != text[k]:
            k = border[k - 1]
        if text[i] == text[k]:
            k += 1
        border[i] = k
    return len(text) - border[-1]


def _alphabet(text: str) -> int:
    if re.fullmatch(r"[0-9a-f]+|[0-9A-F]+", text):
        return 16
    if re.fullmatch(r"[A-Za-z0-9_-]+|[A-Za-z0-9+/]+=*", text) and re.search("[a-z]", text) and re.search("[A-Z]", text):
        return 64
    size = 0
    for pattern, count in (("[a-z]", 26), ("[A-Z]", 26), ("[0-9]", 10), ("[ -/:-@\\[-`{-~]", 33), ("[^\x00-\x7f]", 128)):
        if re.search(pattern, text):
            size += count
    return max(size, 2)


def weak_key_problem(key: str) -> str | None:
    """Why `key` may not sign links, or None when it is strong enough."""
    bits = key_bits(key)
    if bits >= MIN_KEY_BITS:
        return None
    return (f"is too weak to sign links (about {bits:.0f} bits of entropy; at least {MIN_KEY_BITS} are needed, "
            "else one emailed link is enough to recover it and forge any other)")


@dataclass(frozen=True)
class LinkRef:
    """What a valid token names: an action, an object id, and the subscriber it was made for."""

    action: str
    id: int
    #: The link id of the subscriber the token was made for; None for a token of the first format.
    owner: str | None

    def opens(self, owner_link_id: str | None, legacy_max_id: int) -> bool:
        """Whether the token may act on its object, now owned by the subscriber of `owner_link_id`
        (`legacy_max_id`: the largest id of its kind that a first-format token may name)."""
        if self.owner is None:
            return self.id <= legacy_max_id
        return owner_link_id is not None and hmac.compare_digest(self.owner, owner_link_id)


class _KeyCachingSigner(Signer):
    """itsdangerous's Signer, deriving each key once instead of on every signature (a digest
    signs some thirty links); the tokens are the same."""

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        cache = self.__dict__.setdefault("_derived", {})
        if secret_key not in cache:
            cache[secret_key] = super().derive_key(secret_key)
        return cache[secret_key]


class LinkSigner:
    """Makes and checks tracked-link tokens for one installation; `old_keys` are accepted but
    never used to sign."""

    def __init__(self, secret_key: str, old_keys: Sequence[str] = (), *, installation: str) -> None:
        if not secret_key:
            raise ValueError("a secret key is required to sign links")
        for key in (secret_key, *old_keys):
            problem = weak_key_problem(key)
            if problem:
                raise ValueError(f"a signing key {problem}")
        if not installation:
            raise ValueError("links are signed for one installation")
        # itsdangerous signs with the last key and accepts every key of the list.
        self._signer = _KeyCachingSigner([*old_keys, secret_key], salt=f"digest.links/{installation}", key_derivation="hmac", digest_method=hashlib.sha256)
        self._first_format = _KeyCachingSigner([*old_keys, secret_key], salt="digest.links", digest_method=hashlib.sha256)
        # Signing, the hot path (some thirty links a message): the HMAC-SHA256 of itsdangerous's
        # `Signer.sign`, same key, same bytes, from a keyed HMAC made once and copied per token
        # (its key already hashed into the inner and outer states), four times as quick.
        self._mac = hmac.new(self._signer.derive_key(), digestmod=hashlib.sha256)

    def token(self, action: str, object_id: int, owner: str) -> str:
        """The token of `action` on `object_id`, for the subscriber whose link id is `owner`."""
        if action not in ACTIONS:
            raise ValueError(f"unknown link action {action!r}")
        if not owner or not _OWNER.fullmatch(owner):
            raise ValueError(f"a link is made for a subscriber's link id, not {owner!r}")
        value = f"{action}{_base36(object_id)}.{owner}"
        mac = self._mac.copy()
        mac.update(value.encode("ascii"))
        return f"{value}.{base64_encode(mac.digest()).decode('ascii')}"

    def parse(self, token: str, action: str) -> LinkRef | None:
        """What a valid token for `action` names, or None for any forged, altered or other token."""
        try:
            raw = token.encode("ascii")
        except UnicodeError:
            return None
        if raw.count(b".") == 2:
            signer, owner_expected = self._signer, True
        elif raw.count(b".") == 1:
            signer, owner_expected = self._first_format, False
        else:
            return None
        try:
            value = signer.unsign(raw).decode("ascii")
        except (BadSignature, UnicodeError, ValueError):
            return None
        name, _, owner = value.partition(".")
        if owner_expected != bool(owner) or len(name) < 2 or len(name) > 8 or name[0] != action:
            return None
        try:
            object_id = int(name[1:], 36)
        except ValueError:
            return None
        if object_id > MAX_ID:
            return None
        return LinkRef(action, object_id, owner or None)


class LinkMaker:
    """Absolute tracked URLs under the public base URL; `owner` is the subscriber's link id."""

    def __init__(self, base_url: str, signer: LinkSigner) -> None:
        self.base_url = base_url.rstrip("/")
        self.signer = signer

    def url(self, action: str, object_id: int, owner: str, query: str = "") -> str:
        return f"{self.base_url}/{action}/{self.signer.token(action, object_id, owner)}{query}"

    def click(self, item_id: int, owner: str) -> str:
        return self.url("c", item_id, owner)

    def more(self, item_id: int, owner: str) -> str:
        return self.url("f", item_id, owner, "?v=up")

    def less(self, item_id: int, owner: str) -> str:
        return self.url("f", item_id, owner, "?v=down")

    def more_and_less(self, item_id: int, owner: str) -> tuple[str, str]:
        """`more` and `less` of one item: the same token, signed once."""
        url = self.url("f", item_id, owner)
        return f"{url}?v=up", f"{url}?v=down"

    def unsubscribe(self, digest_id: int, owner: str) -> str:
        return self.url("u", digest_id, owner)

    def view(self, digest_id: int, owner: str) -> str:
        return self.url("v", digest_id, owner)

    def pdf(self, item_id: int, owner: str) -> str:
        return self.url("d", item_id, owner)

    def preferences(self, subscriber_id: int, owner: str) -> str:
        return self.url("p", subscriber_id, owner)


def safe_url(url: str | None) -> str | None:
    """`url` when it is an absolute http(s) URL, the only kind a link to a paper may lead to
    (`/c/` redirects, previews, anything that renders a paper's own URL)."""
    if not url or _CONTROL.search(url.strip()):
        return None
    parts = urlsplit(url.strip())
    return url.strip() if parts.scheme in ("http", "https") and parts.netloc else None


_CONTROL = re.compile(r"[\x00-\x20\x7f-\x9f]")


class _Linked(Protocol):
    title: str
    url: str | None
    pdf_url: str | None


def paper_link(paper: _Linked) -> str:
    """Where a click on a paper leads: its own http(s) page, else its PDF, else a Hugging Face
    papers search for its title. Built from what is stored, never from a request; each URL
    passes the one `safe_url` rule."""
    return safe_url(paper.url) or safe_url(paper.pdf_url) or PAPER_SEARCH + quote_plus(paper.title)
