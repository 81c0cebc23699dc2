"""Tracked links: short tokens, signed with `DIGEST_SECRET_KEY`, that name an object and an action.

A token is ``<action><id in base 36>.<HMAC-SHA256>``, for instance ``c2s.kO3…``: it can be
neither forged nor altered without the key, and earlier keys stay valid after a rotation.

| action | names | URL |
|---|---|---|
| ``c`` | a digest item | ``/c/{token}``: click, redirect to the paper |
| ``d`` | a digest item | ``/d/{token}``: click on the PDF link, redirect to the paper's PDF |
| ``f`` | a digest item | ``/f/{token}?v=up|down``: more / less like this (``POST``: undo) |
| ``u`` | a digest | ``/u/{token}``: unsubscribe |
| ``v`` | a digest | ``/v/{token}``: the digest in the browser |
| ``p`` | a subscriber | ``/p/{token}``: the preferences page |
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import quote_plus, urlsplit

from itsdangerous import BadSignature, Signer

ACTIONS = {"c": "click", "d": "pdf", "f": "feedback", "u": "unsubscribe", "v": "view", "p": "preferences"}
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
#: Where a paper with no link of its own is looked up by its title (a Hugging Face trending paper
#: that matches no known arXiv paper).
PAPER_SEARCH = "https://huggingface.co/papers?q="


class _Linked(Protocol):
    title: str
    url: str | None
    pdf_url: str | None


def _web(url: str | None) -> str | None:
    url = (url or "").strip()
    parts = urlsplit(url)
    return url if parts.scheme in ("http", "https") and parts.netloc else None


def paper_link(paper: _Linked) -> str:
    """Where a click on a paper leads: its own http(s) page, else its PDF, else a Hugging Face
    papers search for its title. Built from what is stored, never from a request."""
    return _web(paper.url) or _web(paper.pdf_url) or PAPER_SEARCH + quote_plus(paper.title)


def _base36(number: int) -> str:
    if number < 0:
        raise ValueError("ids are not negative")
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = _DIGITS[digit] + text
        if number == 0:
            return text


class _KeyCachingSigner(Signer):
    """itsdangerous's Signer, deriving each key once instead of on every signature (a digest
    signs some thirty links); the tokens are the same."""

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        cache = self.__dict__.setdefault("_derived", {})
        if secret_key not in cache:
            cache[secret_key] = super().derive_key(secret_key)
        return cache[secret_key]


class LinkSigner:
    """Makes and checks tracked-link tokens; `old_keys` are accepted but never used to sign."""

    def __init__(self, secret_key: str, old_keys: Sequence[str] = ()) -> None:
        if not secret_key:
            raise ValueError("a secret key is required to sign links")
        # itsdangerous signs with the last key and accepts every key of the list.
        self._signer = _KeyCachingSigner([*old_keys, secret_key], salt="digest.links", digest_method=hashlib.sha256)

    def token(self, action: str, object_id: int) -> str:
        if action not in ACTIONS:
            raise ValueError(f"unknown link action {action!r}")
        return self._signer.sign(f"{action}{_base36(object_id)}").decode("ascii")

    def parse(self, token: str, action: str) -> int | None:
        """The id a valid token for `action` names, or None for any forged, altered or other token."""
        try:
            value = self._signer.unsign(token.encode("ascii")).decode("ascii")
        except (BadSignature, UnicodeError, ValueError):
            return None
        if len(value) < 2 or value[0] != action:
            return None
        try:
            return int(value[1:], 36)
        except ValueError:
            return None


class LinkMaker:
    """Absolute tracked URLs under the public base URL."""

    def __init__(self, base_url: str, signer: LinkSigner) -> None:
        self.base_url = base_url.rstrip("/")
        self.signer = signer

    def url(self, action: str, object_id: int, query: str = "") -> str:
        return f"{self.base_url}/{action}/{self.signer.token(action, object_id)}{query}"

    def click(self, item_id: int) -> str:
        return self.url("c", item_id)

    def more(self, item_id: int) -> str:
        return self.url("f", item_id, "?v=up")

    def less(self, item_id: int) -> str:
        return self.url("f", item_id, "?v=down")

    def unsubscribe(self, digest_id: int) -> str:
        return self.url("u", digest_id)

    def view(self, digest_id: int) -> str:
        return self.url("v", digest_id)

    def pdf(self, item_id: int) -> str:
        return self.url("d", item_id)

    def preferences(self, subscriber_id: int) -> str:
        return self.url("p", subscriber_id)
