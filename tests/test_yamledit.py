"""Tests for seel.yamledit: round-trip loading, dotted paths, comment-preserving edits."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString

from seel import yamledit
from seel.errors import SpecError

CONFIG = """\
# top comment
connection:
  name: FlaskConnection          # handler name
  info:
    ip: 127.0.0.1                # loopback
    port: 5000                   # rewritten per trial

model:
  name: 'logistic'               # single-quoted
  kind: "dense"                  # double-quoted
  layers:
    - 16
    - 8

hyperparams:
  global:
    rounds: 4                    # training rounds
    termination_accuracy: 0.99
    early_stop: false
    note: null
"""


@pytest.fixture
def doc(tmp_path: Path) -> CommentedMap:
    path = tmp_path / "config.yml"
    path.write_text(CONFIG, encoding="utf-8")
    return yamledit.load_roundtrip(path)


def test_dump_unchanged_is_identical(doc: CommentedMap) -> None:
    assert yamledit.dump(doc) == CONFIG


def test_set_path_keeps_comments_order_and_eol_comment(doc: CommentedMap) -> None:
    yamledit.set_path(doc, "hyperparams.global.rounds", 7)
    yamledit.set_path(doc, "connection.info.port", 6001)
    text = yamledit.dump(doc)
    assert "    rounds: 7                    # training rounds\n" in text
    assert "    port: 6001                   # rewritten per trial\n" in text
    assert text.startswith("# top comment\n")
    assert text.replace("rounds: 7", "rounds: 4").replace("port: 6001", "port: 5000") == CONFIG
    assert list(doc) == ["connection", "model", "hyperparams"]
    assert list(doc["hyperparams"]["global"]) == [
        "rounds",
        "termination_accuracy",
        "early_stop",
        "note",
    ]


def test_set_path_keeps_quoting_style(doc: CommentedMap) -> None:
    yamledit.set_path(doc, "model.name", "mlp")
    yamledit.set_path(doc, "model.kind", "sparse")
    assert isinstance(doc["model"]["name"], SingleQuotedScalarString)
    assert isinstance(doc["model"]["kind"], DoubleQuotedScalarString)
    text = yamledit.dump(doc)
    assert "  name: 'mlp'                    # single-quoted\n" in text
    assert '  kind: "sparse"                 # double-quoted\n' in text


def test_plain_string_stays_plain(doc: CommentedMap) -> None:
    yamledit.set_path(doc, "connection.name", "GrpcConnection")
    assert "  name: GrpcConnection           # handler name\n" in yamledit.dump(doc)


INJECTIONS = [
    "x\nevil: 1",
    "x: y",
    "x # not a comment",
    "#starts with hash",
    "a\n# c\nkey: 3\n",
    "'",
    '"',
    "- item",
    "{a: 1}",
    "[1, 2]",
    "&anchor x",
    "*alias",
    "!!python/object:os.system",
    "---",
    "...",
    "true",
    "123",
    "null",
    "",
    "  padded  ",
    "tab\there",
    "bell\x07",
    "x" * 300,
]


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("key", ["connection.name", "model.name", "model.kind"])
def test_injection_stays_one_scalar(doc: CommentedMap, key: str, value: str) -> None:
    yamledit.set_path(doc, key, value)
    back = _reload(yamledit.dump(doc))
    assert yamledit.get_path(back, key) == value
    assert isinstance(yamledit.get_path(back, key), str)
    plain = yamledit.to_plain(back)
    expected = yamledit.to_plain(_reload(CONFIG))
    section, leaf = key.split(".")
    expected[section][leaf] = value
    assert plain == expected


def test_injection_into_quoted_keeps_style_when_possible(doc: CommentedMap) -> None:
    yamledit.set_path(doc, "model.name", "a\nb: 1")
    assert isinstance(doc["model"]["name"], SingleQuotedScalarString)


def test_non_string_values(doc: CommentedMap) -> None:
    yamledit.set_path(doc, "hyperparams.global.termination_accuracy", 0.95)
    yamledit.set_path(doc, "hyperparams.global.early_stop", True)
    yamledit.set_path(doc, "hyperparams.global.note", None)
    yamledit.set_path(doc, "model.layers.1", 32)
    back = yamledit.to_plain(_reload(yamledit.dump(doc)))
    assert back["hyperparams"]["global"] == {
        "rounds": 4,
        "termination_accuracy": 0.95,
        "early_stop": True,
        "note": None,
    }
    assert back["model"]["layers"] == [16, 32]


def test_get_and_has_path(doc: CommentedMap) -> None:
    assert yamledit.get_path(doc, "hyperparams.global.rounds") == 4
    assert yamledit.get_path(doc, "model.layers.0") == 16
    assert yamledit.has_path(doc, "hyperparams.global.note")
    assert not yamledit.has_path(doc, "hyperparams.global.missing")
    assert not yamledit.has_path(doc, "hyperparams.global.rounds.deeper")
    assert not yamledit.has_path(doc, "model.layers.2")
    with pytest.raises(KeyError):
        yamledit.get_path(doc, "nope.nope")


def test_set_path_missing_parent_raises(doc: CommentedMap) -> None:
    with pytest.raises(KeyError):
        yamledit.set_path(doc, "simulation.delay_s", 0.5)
    with pytest.raises(KeyError):
        yamledit.set_path(doc, "simulation.delay_s", 0.5, create=True)
    with pytest.raises(KeyError):
        yamledit.set_path(doc, "hyperparams.global.rounds.deeper", 1, create=True)
    assert "simulation" not in doc


def test_set_path_missing_leaf(doc: CommentedMap) -> None:
    with pytest.raises(KeyError):
        yamledit.set_path(doc, "hyperparams.global.patience", 3)
    yamledit.set_path(doc, "hyperparams.global.patience", 3, create=True)
    assert list(doc["hyperparams"]["global"])[-1] == "patience"
    back = yamledit.to_plain(_reload(yamledit.dump(doc)))
    assert back["hyperparams"]["global"]["patience"] == 3


def test_parse_dotted() -> None:
    assert yamledit.parse_dotted("a.b.c") == ["a", "b", "c"]
    assert yamledit.parse_dotted("a") == ["a"]
    for bad in ["", "a..b", ".a", "a."]:
        with pytest.raises(ValueError):
            yamledit.parse_dotted(bad)


def test_to_plain_types(doc: CommentedMap) -> None:
    plain = yamledit.to_plain(doc)
    assert type(plain) is dict
    assert type(plain["model"]["layers"]) is list
    assert type(plain["model"]["name"]) is str
    assert type(plain["hyperparams"]["global"]["termination_accuracy"]) is float
    assert type(plain["hyperparams"]["global"]["rounds"]) is int
    assert plain["hyperparams"]["global"]["early_stop"] is False


def test_copy_keeps_comments_and_is_independent(doc: CommentedMap) -> None:
    for duplicate in (yamledit.copy_doc(doc), copy.deepcopy(doc)):
        yamledit.set_path(duplicate, "hyperparams.global.rounds", 9)
        assert yamledit.dump(duplicate) == CONFIG.replace("rounds: 4", "rounds: 9")
    assert yamledit.dump(doc) == CONFIG


def _load_error(tmp_path: Path, text: str | None) -> SpecError:
    path = tmp_path / "bad.yml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        yamledit.load_roundtrip(path)
    assert info.value.file == str(path)
    assert str(path) in str(info.value)
    return info.value


def test_load_missing_file(tmp_path: Path) -> None:
    assert _load_error(tmp_path, None).why == "file not found"


def test_load_malformed(tmp_path: Path) -> None:
    error = _load_error(tmp_path, "a: 1\nb: [1,\n")
    assert error.why.startswith("malformed YAML at line 3, column 1: ")


def test_load_duplicate_key(tmp_path: Path) -> None:
    error = _load_error(tmp_path, "a: 1\na: 2\n")
    assert error.why.startswith("malformed YAML at line 2, column 1: ")
    assert "duplicate" in error.why


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- 1\n- 2\n", "just text\n"])
def test_load_not_a_mapping(tmp_path: Path, text: str) -> None:
    assert _load_error(tmp_path, text).why == "expected a mapping at the top"


def _reload(text: str) -> Any:
    """Parse with ruamel's safe loader, independently of the round-trip machinery."""
    return YAML(typ="safe", pure=True).load(text)


def test_aliases_that_expand_past_a_million_values_are_refused(tmp_path: Path) -> None:
    rows = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefg", "bcdefgh", strict=True):
        rows.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    path = tmp_path / "laughs.yml"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(SpecError, match="expand to more than 1,000,000 values"):
        yamledit.load_roundtrip(path)
    path.write_text("\n".join(rows[:4]) + "\n")  # 10**4 values: fine
    assert len(yamledit.to_plain(yamledit.load_roundtrip(path))["d"]) == 10
