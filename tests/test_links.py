"""Tracked-link tokens: short, signed, bound to their action; forged or altered ones name nothing."""

from __future__ import annotations

from digest.links import LinkMaker, LinkSigner


def test_a_token_names_its_object_for_its_action_only() -> None:
    signer = LinkSigner("key-one")
    token = signer.token("c", 123456)
    assert len(token) < 60 and "/" not in token and "?" not in token
    assert signer.parse(token, "c") == 123456
    assert signer.parse(token, "u") is None  # a click token cannot unsubscribe


def test_forged_altered_and_truncated_tokens_name_nothing() -> None:
    signer = LinkSigner("key-one")
    token = signer.token("u", 42)
    value, signature = token.split(".", 1)
    assert signer.parse(f"u43.{signature}", "u") is None
    assert signer.parse(token[:-1], "u") is None
    assert signer.parse(token[:-1] + ("A" if token[-1] != "A" else "B"), "u") is None
    assert signer.parse(value, "u") is None
    assert signer.parse(LinkSigner("another-key").token("u", 42), "u") is None
    assert signer.parse("", "u") is None and signer.parse("ü.ß", "u") is None


def test_old_keys_still_open_old_links_after_a_rotation() -> None:
    old = LinkSigner("old-key").token("v", 7)
    rotated = LinkSigner("new-key", old_keys=["old-key"])
    assert rotated.parse(old, "v") == 7
    new = rotated.token("v", 7)
    assert new != old and LinkSigner("new-key").parse(new, "v") == 7
    assert LinkSigner("old-key").parse(new, "v") is None  # the new key signs; the old one only checks


def test_urls_are_under_the_base_url() -> None:
    links = LinkMaker("https://digest.example.org/", LinkSigner("k"))
    assert links.click(5).startswith("https://digest.example.org/c/c5.")
    assert links.more(5).endswith("?v=up") and links.less(5).endswith("?v=down")
    assert links.unsubscribe(9).startswith("https://digest.example.org/u/u9.")
    assert links.view(9).startswith("https://digest.example.org/v/v9.")
