"""Tracked-link tokens: short, signed, bound to their action, installation and subscriber;
forged or altered ones name nothing."""

from __future__ import annotations

import secrets

import pytest

from digest.links import LinkMaker, LinkRef, LinkSigner, key_bits

KEY_ONE, KEY_TWO, OLD_KEY, NEW_KEY = (secrets.token_urlsafe(32) for _ in range(4))  # strong, as every key must be
HERE = "installation-a"
ADA = "0123456789abcdef"


def signer(key: str = KEY_ONE, old_keys: tuple[str, ...] = (), installation: str = HERE) -> LinkSigner:
    return LinkSigner(key, old_keys, installation=installation)


def test_a_token_names_its_object_for_its_action_only() -> None:
    token = signer().token("c", 123456, ADA)
    assert len(token) < 80 and "/" not in token and "?" not in token
    assert signer().parse(token, "c") == LinkRef("c", 123456, ADA)
    assert signer().parse(token, "u") is None  # a click token cannot unsubscribe


def test_forged_altered_and_truncated_tokens_name_nothing() -> None:
    token = signer().token("u", 42, ADA)
    value, owner, signature = token.split(".")
    assert signer().parse(f"u43.{owner}.{signature}", "u") is None
    assert signer().parse(f"{value}.{'f' * 16}.{signature}", "u") is None  # made for someone else
    assert signer().parse(token[:-1], "u") is None
    flipped = "A" if signature[10] != "A" else "B"  # a character that carries 6 bits of the signature (the last one carries 4)
    assert signer().parse(f"{value}.{owner}.{signature[:10]}{flipped}{signature[11:]}", "u") is None
    assert signer().parse(f"{value}.{owner}", "u") is None
    assert signer().parse(signer(KEY_TWO).token("u", 42, ADA), "u") is None
    assert signer().parse("", "u") is None and signer().parse("ü.ß", "u") is None


def test_a_token_of_another_installation_sharing_the_key_names_nothing() -> None:
    token = signer(installation="installation-b").token("u", 42, ADA)
    assert signer(installation="installation-b").parse(token, "u") is not None
    assert signer().parse(token, "u") is None


def test_old_keys_still_open_old_links_after_a_rotation() -> None:
    old = signer(OLD_KEY).token("v", 7, ADA)
    rotated = signer(NEW_KEY, old_keys=(OLD_KEY,))
    assert rotated.parse(old, "v") == LinkRef("v", 7, ADA)
    new = rotated.token("v", 7, ADA)
    assert new != old and signer(NEW_KEY).parse(new, "v") == LinkRef("v", 7, ADA)
    assert signer(OLD_KEY).parse(new, "v") is None  # the new key signs; the old one only checks


def test_a_huge_id_in_a_validly_signed_token_names_nothing() -> None:
    import hashlib

    from itsdangerous import Signer

    forged_by_key_holder = Signer(KEY_ONE, salt=f"digest.links/{HERE}", key_derivation="hmac", digest_method=hashlib.sha256)
    assert signer().parse(forged_by_key_holder.sign(f"c{'z' * 7}.{ADA}").decode(), "c") is None  # 36**7 > 2**31
    assert signer().parse(forged_by_key_holder.sign(f"c{'z' * 60}.{ADA}").decode(), "c") is None
    assert signer().parse(forged_by_key_holder.sign(f"c1.{ADA}").decode(), "c") == LinkRef("c", 1, ADA)


def test_first_format_tokens_are_read_and_open_only_objects_from_before_the_upgrade() -> None:
    import hashlib

    from itsdangerous import Signer

    mailed_before = Signer(KEY_ONE, salt="digest.links", digest_method=hashlib.sha256).sign("u2s").decode()  # as earlier versions made them
    ref = signer().parse(mailed_before, "u")
    assert ref == LinkRef("u", 100, None)
    assert ref.opens(ADA, legacy_max_id=100) and not ref.opens(ADA, legacy_max_id=99) and not ref.opens(ADA, legacy_max_id=0)
    assert signer(KEY_TWO).parse(mailed_before, "u") is None
    assert LinkRef("u", 100, ADA).opens(ADA, 0) and not LinkRef("u", 100, ADA).opens("f" * 16, 10**6)


WEAK_KEYS = {
    "one-letter": "a",
    "a-space": " ",
    "a-word": "test-secret-key",
    "one-letter-repeated": "a" * 64,
    "two-letters-repeated": "ab" * 40,
    "alphabet-repeated": "abcdefghijklmnopqrstuvwxyz" * 3,
    "random-128-bits": secrets.token_hex(16),
}


@pytest.mark.parametrize("weak", WEAK_KEYS.values(), ids=WEAK_KEYS.keys())
def test_weak_keys_are_refused(weak: str) -> None:
    assert key_bits(weak) < 256
    with pytest.raises(ValueError, match="too weak"):
        LinkSigner(weak, installation=HERE)
    with pytest.raises(ValueError, match="too weak"):
        LinkSigner(KEY_ONE, (weak,), installation=HERE)


def test_random_keys_are_strong() -> None:
    assert all(key_bits(secrets.token_urlsafe(32)) >= 256 for _ in range(2000))  # what `digest init` writes
    assert all(key_bits(secrets.token_hex(32)) >= 256 for _ in range(2000))  # openssl rand -hex 32


def test_urls_are_under_the_base_url() -> None:
    links = LinkMaker("https://digest.example.org/", signer())
    assert links.click(5, ADA).startswith(f"https://digest.example.org/c/c5.{ADA}.")
    assert links.more(5, ADA).endswith("?v=up") and links.less(5, ADA).endswith("?v=down")
    assert links.unsubscribe(9, ADA).startswith(f"https://digest.example.org/u/u9.{ADA}.")
    assert links.view(9, ADA).startswith(f"https://digest.example.org/v/v9.{ADA}.")


def test_tokens_are_itsdangerous_signatures_with_the_newest_key() -> None:
    """The signing fast path (a keyed HMAC copied per token) makes exactly the tokens of
    itsdangerous's Signer, which checks them."""
    import hashlib

    from itsdangerous import Signer

    reference = Signer(NEW_KEY, salt=f"digest.links/{HERE}", key_derivation="hmac", digest_method=hashlib.sha256)
    rotated = signer(NEW_KEY, old_keys=(OLD_KEY,))
    for action, object_id, owner in [("c", 0, ADA), ("f", 35, ADA), ("u", 36, "f" * 32), ("p", 2**31 - 1, "89abcdef")]:
        token = rotated.token(action, object_id, owner)
        assert token == reference.sign(token.rsplit(".", 1)[0]).decode()
        assert rotated.parse(token, action) == LinkRef(action, object_id, owner)
    maker = LinkMaker("https://digest.example.org/", rotated)
    assert maker.more_and_less(7, ADA) == (maker.more(7, ADA), maker.less(7, ADA))
