"""Comment-preserving YAML editing: load, read and replace values by dotted path, dump."""

from __future__ import annotations

import copy
import io
import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    ScalarString,
    SingleQuotedScalarString,
)

from seel.errors import SpecError

_STYLED_STRINGS: tuple[type[ScalarString], ...] = (
    SingleQuotedScalarString,
    DoubleQuotedScalarString,
    LiteralScalarString,
    FoldedScalarString,
)
_INDEX = re.compile(r"-?[0-9]+")
_MISSING = object()


class _Representer(RoundTripRepresenter):
    """Round-trip representer that writes nulls as ``null`` rather than as an empty value."""

    def represent_none(self, data: None) -> ScalarNode:
        """Represent None as ``null``."""
        return self.represent_scalar("tag:yaml.org,2002:null", "null")


_Representer.add_representer(type(None), _Representer.represent_none)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    yaml.Representer = _Representer
    return yaml


def _load_text(text: str) -> Any:
    return _yaml().load(text)


def load_roundtrip(path: Path) -> CommentedMap:
    """Load a YAML file whose top level is a mapping, keeping comments, order and quoting."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(path, "", "file not found") from None
    except IsADirectoryError:
        raise SpecError(path, "", "is a directory, not a YAML file") from None
    except UnicodeDecodeError as exc:
        raise SpecError(path, "", f"not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise SpecError(path, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        doc = _load_text(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "cannot parse"
        if mark is None:
            raise SpecError(path, "", f"malformed YAML: {problem}") from None
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        raise SpecError(path, "", f"malformed YAML at {where}: {problem}") from None
    except YAMLError as exc:
        first = (str(exc).splitlines() or ["cannot parse"])[0]
        raise SpecError(path, "", f"malformed YAML: {first}") from None
    except RecursionError:
        raise SpecError(path, "", "malformed YAML: nested too deeply") from None
    except Exception as exc:  # ruamel's constructors raise ValueError, TypeError, KeyError...
        why = str(exc) or type(exc).__name__  # ...for values such as `!!int x` or `2001-02-30`
        raise SpecError(path, "", f"malformed YAML: cannot read a value: {why}") from None
    if not isinstance(doc, CommentedMap):
        raise SpecError(path, "", "expected a mapping at the top")
    _check_unicode(path, doc)
    if _expanded_size(doc, {}) > MAX_VALUES:
        raise SpecError(path, "", f"its aliases expand to more than {MAX_VALUES:,} values")
    return doc


MAX_VALUES = 1_000_000


def _expanded_size(node: Any, sizes: dict[int, int]) -> int:
    """How many values `node` holds once every alias is expanded (linear in the file's nodes)."""
    if not isinstance(node, dict | list):
        return 1
    known = sizes.get(id(node))
    if known is None:
        children = node.values() if isinstance(node, dict) else node
        known = sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return known


def _check_unicode(path: Path, doc: CommentedMap) -> None:
    """SpecError for the first key or string that is not valid Unicode, such as "\\ud800"."""
    stack: list[tuple[str, Any]] = [("", doc)]
    seen: set[int] = set()  # an alias shares its node: each is checked once
    while stack:
        dotted, node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            items = list(node.items())
        elif isinstance(node, list):
            items = list(enumerate(node))
        else:
            continue
        for key, value in items:
            child = f"{dotted}.{key}" if dotted else str(key)
            for text in (key, value):
                if isinstance(text, str) and not _encodable(text):
                    raise SpecError(path, child, "not valid Unicode text (a lone surrogate)")
            stack.append((child, value))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_dotted(dotted: str) -> list[str]:
    """Split a dotted path such as ``hyperparams.global.rounds`` into its parts."""
    parts = dotted.split(".")
    if any(part == "" for part in parts):
        raise ValueError(f"{dotted!r} is not a dotted path: it has an empty part")
    return parts


def _child_key(node: Any, part: str) -> Any:
    """The key (or list index) under which ``part`` names a child of ``node``, else ``_MISSING``."""
    if isinstance(node, dict):
        if part in node:
            return part
        if _INDEX.fullmatch(part) and int(part) in node:
            return int(part)
        return _MISSING
    if isinstance(node, list) and _INDEX.fullmatch(part):
        index = int(part)
        if 0 <= index < len(node):
            return index
    return _MISSING


def _walk(doc: Any, parts: list[str]) -> Any:
    """The node reached by following ``parts`` from ``doc``, else ``_MISSING``."""
    node = doc
    for part in parts:
        key = _child_key(node, part)
        if key is _MISSING:
            return _MISSING
        node = node[key]
    return node


def has_path(doc: Any, dotted: str) -> bool:
    """Whether the dotted path names an existing value in ``doc``."""
    return _walk(doc, parse_dotted(dotted)) is not _MISSING


def get_path(doc: Any, dotted: str) -> Any:
    """The value at a dotted path; KeyError if it does not exist."""
    node = _walk(doc, parse_dotted(dotted))
    if node is _MISSING:
        raise KeyError(dotted)
    return node


def _survives_dump(value: str) -> bool:
    """Whether ``value`` dumps and reloads as exactly the same string, in one scalar."""
    probe = CommentedMap()
    probe["k"] = value
    try:
        back = _load_text(dump(probe))
    except YAMLError:
        return False
    return isinstance(back, dict) and list(back) == ["k"] and back["k"] == value


def _styled(old: Any, value: Any) -> Any:
    """``value``, in the quoting style of ``old`` when both are strings."""
    if not isinstance(value, str) or isinstance(value, ScalarString):
        return value
    for style in _STYLED_STRINGS:
        if isinstance(old, style):
            styled = style(value)
            return styled if _survives_dump(styled) else DoubleQuotedScalarString(value)
    return value


def set_path(doc: Any, dotted: str, value: Any, *, create: bool = False) -> None:
    """Replace the value at an existing dotted path, keeping comments, key order and quoting.

    With ``create=True`` the last key may be new, but its parent mapping must exist.
    """
    parts = parse_dotted(dotted)
    parent = _walk(doc, parts[:-1])
    if not isinstance(parent, dict | list):
        raise KeyError(dotted)
    key = _child_key(parent, parts[-1])
    if key is _MISSING:
        if not create or not isinstance(parent, dict):
            raise KeyError(dotted)
        parent[parts[-1]] = value
        return
    parent[key] = _styled(parent[key], value)


def dump(doc: Any) -> str:
    """Dump a round-trip document back to YAML text."""
    out = io.StringIO()
    _yaml().dump(doc, out)
    return out.getvalue()


def to_plain(doc: Any) -> Any:
    """Convert a round-trip document into plain dicts, lists, str, int, float, bool and None."""
    if isinstance(doc, dict):
        return {to_plain(key): to_plain(value) for key, value in doc.items()}
    if isinstance(doc, list):
        return [to_plain(item) for item in doc]
    if isinstance(doc, bool):
        return bool(doc)
    if isinstance(doc, int):
        return int(doc)
    if isinstance(doc, float):
        return float(doc)
    if isinstance(doc, str):
        return str(doc)
    return doc


def copy_doc(doc: CommentedMap) -> CommentedMap:
    """A deep copy of a round-trip document that keeps its comments."""
    return copy.deepcopy(doc)
