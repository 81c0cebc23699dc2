"""The preferences page's work: a subscriber's own edits written back into their profile file.

The profile files stay the source of truth: an edit is applied to the file with ruamel.yaml's
round trip, so the operator's comments, key order and quoting survive, only the keys that changed
are touched, and the result is validated exactly as `digest profiles validate` does before it
replaces the file (atomically). The page then syncs that one subscriber.

Forms are safe against cross-site requests: every form carries a token signed with the
installation's key, bound to the page's own signed link and valid for a day, and a POST whose
`Origin` (or, lacking one, `Referer`) is not the service's own is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, ScalarString
from ruamel.yaml.util import load_yaml_guess_indent

from .files import replace_file
from .profiles import Profile, check_size
from .yamlfile import FileError, parse_model

#: The order of the README's example profile (§ Subscriber profiles): a key the page adds goes after its predecessor.
KEY_ORDER = ("email", "name", "timezone", "send_at", "max_items", "interests", "avoid", "authors", "categories", "active", "paused_until")
#: A form token is good for this long after the page was shown.
FORM_MAX_AGE = 24 * 3600
#: Empty interest rows the page offers for additions.
NEW_ROWS = 2
MAX_PAUSE_DAYS = 365


class Conflict(Exception):
    """The profile file changed between showing the page and saving it."""


# --- cross-site request forgery ---------------------------------------------------------------------


class FormTokens:
    """Per-form tokens bound to the page's signed link (`link_token`), signed like the links."""

    def __init__(self, secret_key: str, old_keys: Sequence[str] = ()) -> None:
        self._signer = TimestampSigner([*old_keys, secret_key], salt="digest.forms", digest_method=hashlib.sha256)

    @staticmethod
    def _bound(link_token: str) -> str:
        return hashlib.sha256(link_token.encode()).hexdigest()[:32]

    def make(self, link_token: str) -> str:
        return self._signer.sign(self._bound(link_token)).decode("ascii")

    def check(self, token: str | None, link_token: str, max_age: int = FORM_MAX_AGE) -> bool:
        if not token:
            return False
        try:
            value = self._signer.unsign(token.encode("ascii"), max_age=max_age).decode("ascii")
        except (SignatureExpired, BadSignature, UnicodeError, ValueError):
            return False
        return value == self._bound(link_token)


def same_origin(headers: Mapping[str, str], base_url: str) -> bool:
    """Whether a POST comes from the service's own pages: its `Origin`, or lacking one its
    `Referer`, is the origin of `base_url`. A request with neither, or `Origin: null`, is refused."""
    expected = _origin(base_url)
    origin = headers.get("origin")
    if origin is not None:
        return origin != "null" and _origin(origin) == expected
    referer = headers.get("referer")
    return bool(referer) and _origin(referer) == expected


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url.strip())
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        port = -1
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


# --- the form -------------------------------------------------------------------------------------


@dataclass
class InterestRow:
    phrase: str = ""
    weight: str = ""
    remove: bool = False


@dataclass
class Edit:
    """What the subscriber submitted, as text: the profile's validation judges it."""

    interests: list[InterestRow] = field(default_factory=list)
    avoid: list[str] = field(default_factory=list)
    authors: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    send_at: str = ""
    timezone: str = ""
    max_items: str = ""


def parse_form(form: Mapping[str, str]) -> Edit:
    """The submitted form: interest rows `interest-N-phrase` / `-weight` / `-remove`, one entry a
    line for avoided phrases and authors, categories separated by spaces or commas."""
    rows: dict[int, InterestRow] = {}
    for key, value in form.items():
        match = re.fullmatch(r"interest-(\d{1,3})-(phrase|weight|remove)", key)
        if match:
            row = rows.setdefault(int(match[1]), InterestRow())
            if match[2] == "remove":
                row.remove = True
            else:
                setattr(row, match[2], str(value).strip())
    return Edit(
        interests=[rows[n] for n in sorted(rows)],
        avoid=_lines(form.get("avoid", "")),
        authors=_lines(form.get("authors", "")),
        categories=[c for c in re.split(r"[\s,;]+", str(form.get("categories", ""))) if c],
        send_at=str(form.get("send_at", "")).strip(),
        timezone=str(form.get("timezone", "")).strip(),
        max_items=str(form.get("max_items", "")).strip(),
    )


def parse_days(text: str) -> int | None:
    """The number of days of a pause, 1 to `MAX_PAUSE_DAYS`, or None."""
    try:
        days = int(str(text).strip())
    except ValueError:
        return None
    return days if 1 <= days <= MAX_PAUSE_DAYS else None


def form_errors(error: FileError, edit: Edit) -> dict[str, str]:
    """A validation error of the edited profile (as `profiles validate` words it, without the
    file and line) keyed by the form field it is about: `interests[1].weight` is the weight
    input of the row that became the second interest."""
    field_name = error.field or "profile"
    message = f"{field_name}: {error.message}"
    match = re.fullmatch(r"interests\[(\d+)\](?:\.(phrase|weight))?", field_name)
    if match:
        kept = [n for n, row in enumerate(edit.interests) if row.phrase and not row.remove]
        index = int(match[1])
        row = kept[index] if index < len(kept) else index
        return {f"interest-{row}-{match[2] or 'phrase'}": message}
    return {field_name.split(".", 1)[0].split("[", 1)[0]: message}


def _lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in str(text).splitlines() if line.strip()]


def _number(text: str) -> int | float | str:
    """A number where the text is one (an integer where it is whole), else the text for the
    validation to name."""
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and abs(value) < 1e9 else value


# --- the file -------------------------------------------------------------------------------------


class ProfileFile:
    """One profile file, loaded for a round trip."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        check_size(self.path)  # an oversized file is the operator's to fix, not parsed on a request
        self.original = self.path.read_text(encoding="utf-8")
        self.version = hashlib.sha256(self.original.encode()).hexdigest()[:16]
        _, indent, offset = load_yaml_guess_indent(self.original)
        self.yaml = YAML()  # round trip
        self.yaml.preserve_quotes = True
        self.yaml.width = 4096
        # As ruamel.yaml's documentation does it; a file without block sequences gets the style
        # of config/subscribers/ ("  - phrase").
        self.yaml.indent(mapping=indent or 4, sequence=indent or 4, offset=2 if offset is None else offset)
        self.data = self.yaml.load(self.original)
        if not isinstance(self.data, CommentedMap):
            raise FileError(str(self.path), 1, None, "expected a mapping of keys to values at the top of the file")

    def profile(self) -> Profile:
        """The file as it is, validated (raises `FileError` as `profiles validate` reports it)."""
        return parse_model(self.original, str(self.path), Profile)[0]

    def apply(self, edit: Edit, current: Profile) -> None:
        """Write the fields that differ from `current` into the document, in place."""
        self._interests(edit.interests, current)
        for key in ("avoid", "authors", "categories"):
            values = getattr(edit, key)
            if values != getattr(current, key):
                self._set_list(key, values)
        if edit.send_at != current.send_at:
            old = self.data.get("send_at")
            self._set("send_at", type(old)(edit.send_at) if isinstance(old, ScalarString) else DoubleQuotedScalarString(edit.send_at))
        if edit.timezone != current.timezone:
            self._set("timezone", edit.timezone)
        if edit.max_items != str(current.max_items):
            self._set("max_items", _number(edit.max_items))

    def pause(self, until: dt.date | None) -> None:
        """`paused_until: until`, or the key removed (`None`: resume)."""
        if until is None:
            if "paused_until" in self.data:
                del self.data["paused_until"]
        else:
            self._set("paused_until", until)

    def text(self) -> str:
        out = io.StringIO()
        self.yaml.dump(self.data, out)
        return out.getvalue()

    def validate(self) -> Profile:
        """The edited document validated as `profiles validate` would (raises `FileError`)."""
        return parse_model(self.text(), str(self.path), Profile)[0]

    def save(self) -> Profile:
        """Validate the edited document and replace the file with it, unless the file changed
        since it was loaded (`Conflict`). The file keeps its mode; a reader never sees half of it."""
        profile = self.validate()
        text = self.text()
        if self.path.read_text(encoding="utf-8") != self.original:
            raise Conflict(str(self.path))
        if text != self.original:
            replace_file(self.path, text, stat.S_IMODE(self.path.stat().st_mode))
        return profile

    # --- editing, keeping what the operator wrote ---

    def _set(self, key: str, value: object) -> None:
        if key in self.data:
            self.data[key] = value
            return
        position = 0
        for name in KEY_ORDER[: KEY_ORDER.index(key)]:
            if name in self.data:
                position = list(self.data).index(name) + 1
        self.data.insert(position, key, value)

    def _set_list(self, key: str, values: list[str]) -> None:
        old = self.data.get(key)
        if old is None and not values:
            return
        seq = CommentedSeq(values)
        if not isinstance(old, CommentedSeq) or old.fa.flow_style() or not values:
            seq.fa.set_flow_style()
        self._set(key, seq)

    def _interests(self, rows: list[InterestRow], current: Profile) -> None:
        """Rows 0..n-1 are the file's interests in order (the version check makes sure), the rest
        new ones; a removed or emptied row goes, a changed one is rewritten in place."""
        seq = self.data.get("interests")
        if not isinstance(seq, CommentedSeq):
            seq = CommentedSeq()
            self._set("interests", seq)
        existing = len(seq)
        kept = [(n, row) for n, row in enumerate(rows) if row.phrase and not row.remove]
        wanted = {n for n, _ in kept if n < existing}
        for n in reversed(range(existing)):
            if n not in wanted:
                del seq[n]
        position = 0
        for n, row in kept:
            weight = _number(row.weight) if row.weight else 1
            if n < existing:
                before = current.interests[n] if n < len(current.interests) else None
                if before is None or before.phrase != row.phrase or before.weight != weight:
                    seq[position] = _interest(seq[position], row.phrase, weight)
                position += 1
            else:
                seq.append(_interest(None, row.phrase, weight))


def _interest(old: object, phrase: str, weight: object) -> object:
    """An interest as the file writes it: the shorthand `- phrase` at weight 1 unless it was
    written out before, else `{phrase: ..., weight: ...}` (in place, where it was one)."""
    if isinstance(old, CommentedMap):
        old["phrase"] = phrase
        if weight != 1 or "weight" in old:
            old["weight"] = weight
        return old
    if weight == 1:
        return type(old)(phrase) if isinstance(old, ScalarString) else phrase
    item = CommentedMap([("phrase", phrase), ("weight", weight)])
    item.fa.set_flow_style()
    return item


def resolve(profile_file: str | None, folder: Path) -> Path | None:
    """The profile file of a subscriber, only if it is a file of the profiles folder (a path in
    the database never makes the web endpoints write elsewhere)."""
    if not profile_file:
        return None
    path = Path(profile_file)
    candidates = [path] if path.is_absolute() else [path, folder / path.name]
    root = folder.resolve()
    for candidate in candidates:
        if candidate.is_file() and candidate.resolve().parent == root:
            return candidate.resolve()
    return None
