"""`seel init`: a starter sweep file from an existing config directory.

Every numeric hyperparameter found in the configs is listed as a commented-out candidate with its
current value; uncomment the ones to sweep and give them values.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seel import yamledit
from seel.engine import Engine
from seel.enginefile import load_engine
from seel.errors import SpecError

_SKIP_LEAVES = {"port", "party_index", "num_classes"}


def _listed(path: str) -> bool:
    """Whether a numeric key is a hyperparameter to offer (ports and indexes are not)."""
    return path.rsplit(".", 1)[-1] not in _SKIP_LEAVES


def numeric_leaves(doc: Any, prefix: str = "") -> Iterator[tuple[str, int | float]]:
    """Dotted paths and values of every int or float (not bool) in a config."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from numeric_leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(doc, int | float) and not isinstance(doc, bool):
        yield prefix, doc


def find_configs(config_dir: Path) -> tuple[Path, list[Path]]:
    """The aggregator config and the party configs of a directory, IBM FL's file names."""
    agg = config_dir / "config_agg.yml"
    parties = sorted(config_dir.glob("config_party*.yml"), key=lambda p: (len(p.name), p.name))
    if not config_dir.is_dir():
        raise SpecError(config_dir, "", "not a directory")
    if not agg.exists():
        raise SpecError(config_dir, "config_agg.yml", "missing: expected IBM FL's config_agg.yml")
    if not parties:
        raise SpecError(config_dir, "config_party*.yml", "missing: expected config_party0.yml, ...")
    return agg, parties


def _candidates(doc: Any, prefix: str) -> list[str]:
    return [
        f"  # {prefix}{path}: {{values: [{value!r}]}}"
        for path, value in numeric_leaves(yamledit.to_plain(doc))
        if _listed(path)
    ]


def _find_under(value: str, start: Path, root: Path | None) -> Path | None:
    """Where a relative path names an existing file: under `root`, else under `start` or one
    of its parents (IBM FL's example configs name files relative to its repository's root)."""
    bases = [root] if root is not None else [start, *start.parents]
    return next((b / value for b in bases if (b / value).is_file()), None)


def _file_lines(
    engine: Engine, paths: list[Path], docs: list[Any], root: Path | None
) -> tuple[list[str], list[str]]:
    """Single-value parameters that point the engine at the files the configs name, where they
    name them relative to somewhere else than the engine looks; and notes on files not found."""
    fixes: list[str] = []
    notes: list[str] = []
    procs = [engine.aggregator] + [engine.party] * (len(docs) - 1)
    cwd = paths[0].parent.resolve()
    for i, (path, doc, proc) in enumerate(zip(paths, docs, procs, strict=True)):
        prefix = "" if i == 0 else f"party[{i - 1}]."
        for key in proc.file_keys:
            value = yamledit.get_path(doc, key) if yamledit.has_path(doc, key) else None
            if not isinstance(value, str) or not value or Path(value).is_absolute():
                continue
            base = path.parent.resolve() if key in proc.path_keys or engine.cwd != "config" else cwd
            if (base / value).is_file():
                continue
            found = _find_under(value, path.parent.resolve(), root)
            if found is None:
                notes.append(f"# {prefix}{key}: {value} not found from {base} (seel init --root)")
                continue
            fixes.append(f"  {prefix}{key}: {{values: [{os.path.relpath(found, base)}]}}")
    return fixes, notes


def timeouts_comment(engine: Engine) -> str:
    """A starter sweep's commented `timeouts:` line: the engine's, for the phases it has."""
    phases = {step.phase for step in engine.lifecycle}
    timeouts = ", ".join(f"{k}: {v:g}" for k, v in engine.timeouts.items() if k in phases)
    return f"# timeouts: {{{timeouts}}}   # the engine's, per phase, s"


def starter_sweep(config_dir: Path, engine: str, out: Path, root: Path | None = None) -> str:
    """The text of a starter sweep file that will live at `out`.

    Files the configs name relative to another folder than the engine resolves them against
    (IBM FL's examples: its repository's root, given as `root` or found above `config_dir`) are
    pointed at by single-value parameters; the commented timeouts are the engine's own.
    """
    agg_path, party_paths = find_configs(config_dir)
    agg = yamledit.load_roundtrip(agg_path)
    parties = [yamledit.load_roundtrip(p) for p in party_paths]
    definition = load_engine(engine, "seel")
    fixes, notes = _file_lines(
        definition, [agg_path, *party_paths], [agg, *parties], root.resolve() if root else None
    )
    rel = Path(os.path.relpath(config_dir.resolve(), out.resolve().parent))
    lines = [
        f"# A starter sweep for {config_dir}, written by `seel init`.",
        "# Uncomment the parameters to sweep and give them values:",
        "#   {values: [1, 2]}, {min: 0, max: 200, step: 50} or",
        "#   {random: uniform, low: 0.01, high: 1, count: 5, seed: 0}",
        f"name: {config_dir.resolve().name}",
        f"engine: {engine}",
        "configs:",
        f"  aggregator: {rel / agg_path.name}",
        "  parties:",
        *(f"    - {rel / p.name}" for p in party_paths),
        *notes,
        "parameters:",
        *(
            [
                "  # files the configs name relative to another folder, as the engine finds them",
                *fixes,
            ]
            if fixes
            else []
        ),
        "  # aggregator",
        *_candidates(agg, ""),
    ]
    plain = [yamledit.to_plain(p) for p in parties]
    shared = dict(numeric_leaves(plain[0]))
    for doc in plain[1:]:
        theirs = dict(numeric_leaves(doc))
        shared = {k: v for k, v in shared.items() if theirs.get(k) == v}
    shared_lines = [f"  # party.{k}: {{values: [{v!r}]}}" for k, v in shared.items() if _listed(k)]
    if shared_lines:
        lines += ["  # every party (the same value in each config now)", *shared_lines]
    for i, doc in enumerate(plain):
        own = [
            f"  # party[{i}].{k}: {{values: [{v!r}]}}"
            for k, v in numeric_leaves(doc)
            if k not in shared and _listed(k)
        ]
        if own:
            lines += [f"  # party {i} only", *own]
    lines += [
        "repeats: 1",
        timeouts_comment(definition),
        "",
    ]
    return "\n".join(lines)
