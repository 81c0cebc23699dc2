"""Load a YAML file into a pydantic model, reporting any problem with file, line and field.

PyYAML keeps the position of every node; pydantic reports where in the data a value is wrong.
`load_model` joins the two, so a typo in a profile reads as
``config/subscribers/ada.yaml:7: timezone: unknown time zone 'Europe/Londn'``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1's base-60 numbers, so `send_at: 7:30` stays the text "7:30"."""


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _NUMBER_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# YAML 1.1's int and float patterns, less their base-60 forms.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$", re.X),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", re.X),
    list("-+0123456789."),
)


@dataclass(frozen=True)
class FileError(Exception):
    """A problem in one file, at one line, with one field (when the problem has a field)."""

    path: str
    line: int
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


def load_model(path: str | Path, model: type[M], context: dict[str, Any] | None = None) -> tuple[M, yaml.Node]:
    """Parse `path` and validate it as `model`; raise `FileError` naming line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FileError(str(path), 1, None, f"cannot read: {exc}") from None
    return parse_model(text, str(path), model, context)


def parse_model(text: str, name: str, model: type[M], context: dict[str, Any] | None = None) -> tuple[M, yaml.Node]:
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise FileError(name, line, None, f"not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise FileError(name, 1, None, f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise FileError(name, 1, None, "expected a mapping of keys to values at the top of the file")
    try:
        return model.model_validate(data, context=context), node
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        line, field = _locate(node, loc)
        message = _message(first)
        more = len(exc.errors()) - 1
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise FileError(name, line, field, message) from None


def _locate(node: yaml.Node, loc: tuple[Any, ...]) -> tuple[int, str]:
    """The line of the deepest node `loc` reaches, and `loc` written as a field path."""
    line = node.start_mark.line + 1
    current: yaml.Node | None = node
    parts: list[str] = []
    for key in loc:
        if isinstance(key, int):
            parts.append(f"[{key}]")
        else:
            parts.append(("." if parts else "") + str(key))
        if isinstance(current, yaml.MappingNode):
            found = None
            for key_node, value_node in current.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(key):
                    line = key_node.start_mark.line + 1
                    found = value_node
                    break
            current = found
        elif isinstance(current, yaml.SequenceNode) and isinstance(key, int) and key < len(current.value):
            current = current.value[key]
            line = current.start_mark.line + 1
        else:
            current = None
    return line, "".join(parts) or "(file)"


def _message(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key (check its spelling)"
    if kind == "missing":
        return "required, but missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")
