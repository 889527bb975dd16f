"""What a trial's processes are made of besides their configs: templates and files.

An engine's command lines, environment, `files:` and `commands:` may name values of the trial:

    {python}        the engine's Python         {bin}        the folder it is in (a venv's bin)
    {config}        this process's config file  {trial_dir}  the trial's directory
    {cfg:KEY}       KEY of this process's config (a command's or a file's: the aggregator's)
    {agg:KEY}       KEY of the aggregator's config
    {var:NAME}      what a step captured (`capture:` with a (?P<NAME>...) group)

A mapping is written as space-separated TOML `key=value` pairs (`lr=0.5 split="iid"`), the form
Flower's `--run-config` and `--node-config` take. A `toml_edits:` entry copies the directory a
config key names into the trial directory and writes a config mapping into a table of a TOML file
there, keeping its comments (tomlkit); the key then names the copy.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from seel import yamledit
from seel.engine import Engine, TomlEdit
from seel.errors import SeelError, SpecError

_FIELD = re.compile(r"\{(python|bin|config|trial_dir|(?:cfg|agg|var):[^{}]+)\}")


class TemplateError(SeelError):
    """A template names a key or variable the trial does not have."""


def toml_value(value: Any) -> str:
    """A scalar as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def format_value(value: Any) -> str:
    """A config value as command-line text: a mapping as `k=v` TOML pairs, else its text."""
    if isinstance(value, Mapping):
        return " ".join(f"{k}={toml_value(v)}" for k, v in value.items())
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class TrialFiles:
    """The rendered configs of one trial (aggregator first), and the values templates name."""

    def __init__(self, engine: Engine, trial_dir: Path, config_paths: Sequence[Path]) -> None:
        self.engine = engine
        self.trial_dir = trial_dir
        self.paths = list(config_paths)
        self._docs: list[Any] | None = None  # loaded when a template or an edit needs them
        self.variables: dict[str, str] = {}

    @property
    def docs(self) -> list[Any]:
        if self._docs is None:
            self._docs = [yamledit.to_plain(yamledit.load_roundtrip(p)) for p in self.paths]
        return self._docs

    # -- before any process starts ----------------------------------------------------------

    def prepare(self) -> None:
        """Apply TOML edits (rewriting configs that name a copy) and write the engine's files."""
        procs = [self.engine.aggregator] + [self.engine.party] * (len(self.paths) - 1)
        for index, proc in enumerate(procs):
            if not proc.toml_edits:
                continue
            if any(self._edit(index, edit) for edit in proc.toml_edits):
                doc = yamledit.load_roundtrip(self.paths[index])
                for edit in proc.toml_edits:
                    yamledit.set_path(doc, edit.dir, yamledit.get_path(self.docs[index], edit.dir))
                self.paths[index].write_text(yamledit.dump(doc), encoding="utf-8")
        for rel, text in self.engine.files:
            path = self.trial_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.render(text, 0), encoding="utf-8")

    def _edit(self, index: int, edit: TomlEdit) -> bool:
        """Copy and edit for one TOML edit; False when its mapping is empty (nothing to do)."""
        doc = self.docs[index]
        values = self._lookup(doc, edit.values, self.paths[index])
        if not values:
            return False
        if not isinstance(values, Mapping):
            raise TemplateError(f"{self.paths[index]}: {edit.values} is not a mapping")
        source = Path(str(self._lookup(doc, edit.dir, self.paths[index])))
        if not source.is_absolute():
            source = self.paths[index].parent / source
        target = self.trial_dir / f"{source.name}-{index}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        edit_toml(target / edit.file, edit.table, values)
        yamledit.set_path(doc, edit.dir, str(target))
        return True

    # -- rendering --------------------------------------------------------------------------

    def render(self, text: str, index: int | None) -> str:
        """`text` with its fields filled in for the process at `index` (0: the aggregator;
        None: a command of the trial, which reads the aggregator's config)."""
        own = 0 if index is None else index

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name == "python":
                return self.engine.python
            if name == "bin":
                return str(Path(self.engine.python).parent)
            if name == "config":
                return str(self.paths[own])
            if name == "trial_dir":
                return str(self.trial_dir)
            kind, _, key = name.partition(":")
            if kind == "var":
                if key not in self.variables:
                    raise TemplateError(f"{text!r} needs {{var:{key}}}, which no step captured")
                return self.variables[key]
            doc_index = 0 if kind == "agg" else own
            return format_value(self._lookup(self.docs[doc_index], key, self.paths[doc_index]))

        return _FIELD.sub(fill, text)

    def argv(self, argv: Sequence[str], index: int | None) -> list[str]:
        return [self.render(part, index) for part in argv]

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` with the engine's variables rendered for this trial."""
        return {**base, **{k: self.render(v, None) for k, v in self.engine.env.items()}}

    def value(self, index: int, key: str) -> Any:
        """KEY of the config of the process at `index` (0: the aggregator)."""
        return self._lookup(self.docs[index], key, self.paths[index])

    @staticmethod
    def _lookup(doc: Any, key: str, path: Path) -> Any:
        if not yamledit.has_path(doc, key):
            raise TemplateError(f"{path}: no key {key}")
        return yamledit.get_path(doc, key)


def edit_toml(path: Path, table: str, values: Mapping[str, Any]) -> None:
    """Set `values` in `table` (dotted) of a TOML file, keeping its comments and layout.

    A key the table does not have already is refused: it is most likely misspelt.
    """
    import tomlkit  # optional: `pip install seel[flower]`

    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    node: Any = doc
    for part in table.split("."):
        if part not in node:
            raise TemplateError(f"{path}: no table [{table}]")
        node = node[part]
    for key, value in values.items():
        if key not in node:
            known = ", ".join(str(k) for k in node)
            raise TemplateError(f"{path}: [{table}] has no key {key!r} (it has {known})")
        node[key] = value
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")


def check_templates(engine: Engine, paths: Sequence[Path], docs: Sequence[Any]) -> None:
    """Every `{cfg:KEY}` and `{agg:KEY}` an engine's templates name is in the configs (aggregator
    first); SpecError names the config and key before anything starts."""
    party_texts = list(engine.party.command)
    agg_texts = [
        *engine.aggregator.command,
        *(part for argv in engine.commands.values() for part in argv),
        *(text for _, text in engine.files),
        *engine.env.values(),
    ]
    wanted: list[tuple[int, str]] = []
    for texts, own in ((agg_texts, [0]), (party_texts, list(range(1, len(docs))))):
        for text in texts:
            for match in _FIELD.finditer(text):
                kind, _, key = match.group(1).partition(":")
                if kind == "cfg":
                    wanted += [(i, key) for i in own]
                elif kind == "agg":
                    wanted.append((0, key))
    for index, key in wanted:
        if not yamledit.has_path(docs[index], key):
            raise SpecError(
                paths[index], key, f"missing: the {engine.name} engine's commands use it"
            )
