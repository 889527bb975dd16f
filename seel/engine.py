"""Engines as data: how to start an aggregator and its parties and drive them through a trial.

An engine is a YAML definition (see `seel/engines/*.yml`): the commands, the ordered lifecycle
steps (send a line to a process, expect a marker), the failure markers that end a step at once,
the config keys that hold ports and seeds, and the patterns for round lines and metrics lines.
A sweep file names a shipped engine or defines its own in the same shape; reading a definition
and checking it is `seel/enginefile.py`.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

PHASES = ("init", "start", "register", "train", "eval", "stop")
DEFAULT_PHASE_TIMEOUT_S = 60.0  # for a phase an engine and its sweep give no timeout
_MAX_METRICS_LINE = 16_384

# (aggregator doc, party docs, aggregator config path, party config paths) -> None, or raises
# an exception with `key` and `why` attributes (such as seel.fl.config.ConfigError).
Validator = Callable[[dict[str, Any], list[dict[str, Any]], Path, list[Path]], None]


@dataclass(frozen=True)
class Step:
    """One lifecycle step: optionally send a line to the process(es), then wait for markers."""

    phase: str
    process: str  # "aggregator" or "parties"
    send: str | None = None
    expect: tuple[str, ...] = ()
    expect_metrics: bool = False
    expect_exit: bool = False
    # a regex whose named groups become the trial's variables ({var:NAME} in later commands)
    capture: re.Pattern[str] | None = None
    # the process's whole output, once it has exited, is JSON with these values at these paths
    expect_json: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Failure:
    """A marker that ends the trial with `status` the moment any process prints it."""

    marker: str
    status: str
    retry: bool = False  # an infrastructure failure (a port taken): the trial may be re-run


@dataclass(frozen=True)
class ProcessDef:
    """How to start one kind of process and which of its config keys SEEL rewrites."""

    command: tuple[str, ...]
    port_keys: tuple[str, ...]
    aggregator_port_keys: tuple[str, ...] = ()
    seed_keys: tuple[str, ...] = ()
    path_keys: tuple[str, ...] = ()
    file_keys: tuple[str, ...] = ()  # files that must exist before the sweep starts (data, model)
    stop_line: str | None = None
    # tables of TOML files in a directory a config key names, written from a config mapping
    toml_edits: tuple[TomlEdit, ...] = ()
    # a config key holding a round r > 0: the process is killed (SIGKILL to its group, and what
    # it started in sessions of its own) when round r starts; the trial goes on without it
    kill_at_round_key: str | None = None
    # when a sweep sets the number of parties (`parties.count`): keys set to the party's index
    # (parties only) and to the number of parties of the trial; a party's must be in its config,
    # the aggregator's are set where its config has them (an app's own `min-nodes`)
    index_keys: tuple[str, ...] = ()
    count_keys: tuple[str, ...] = ()
    # keys whose value must differ between a trial's parties (a party's own data file): a count
    # that would make two parties of one config is refused unless a `party[i]` sets them apart
    unique_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class TomlEdit:
    """Write the mapping at config key `values` into `table` of `file` in the directory at config
    key `dir` (a copy in the trial directory, comments kept); the key then names the copy."""

    dir: str
    file: str
    table: str
    values: str


@dataclass(frozen=True)
class Reuse:
    """The processes a trial starts may serve later trials (seel/deployments.py): trials whose
    swept values differ only under `when_only` (aggregator config keys, dotted prefixes) share
    them, and a trial on processes another started begins at `from_phase`."""

    when_only: tuple[str, ...]
    from_phase: str


@dataclass(frozen=True)
class RoundLine:
    """What a round line says: the round's number, of how many (if said), the global accuracy."""

    round: int
    rounds: int | None
    accuracy: float | None


class _NonFinite(ast.NodeTransformer):
    """`nan` and `inf` as Python prints them in a dict (`float('nan')` reprs as `nan`)."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in ("nan", "inf"):
            return ast.copy_location(ast.Constant(float(node.id)), node)
        return node


def parse_metrics(text: str) -> dict[str, float] | None:
    """Read a metrics dict literal (never evaluated as code); numeric entries only.

    Bare `nan` and `inf` are read as floats; a number beyond the float range is left out.
    """
    if len(text) > _MAX_METRICS_LINE:
        return None
    try:
        tree = _NonFinite().visit(ast.parse(text.strip(), mode="eval"))
        value = ast.literal_eval(tree)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    metrics = {}
    for k, v in value.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            try:
                metrics[str(k)] = float(v)
            except OverflowError:
                continue
    return metrics


def parse_round(match: re.Match[str]) -> RoundLine | None:
    """A round line's match as a RoundLine; None if its round number is unreadable."""
    groups = match.groupdict()
    try:
        number = int(match.group("round"))
        total = int(groups["rounds"]) if groups.get("rounds") else None
    except ValueError:
        return None
    try:
        accuracy = float(groups["accuracy"]) if groups.get("accuracy") else None
    except ValueError:
        accuracy = None
    return RoundLine(number, total, accuracy)


@dataclass(frozen=True)
class Engine:
    """A complete engine definition."""

    name: str
    description: str
    python: str
    check: tuple[str, ...]
    cwd: str  # "trial" (the trial directory) or "config" (the directory of the user's configs)
    aggregator: ProcessDef
    party: ProcessDef
    lifecycle: tuple[Step, ...]
    failures: tuple[Failure, ...]
    round_pattern: re.Pattern[str] | None
    metrics_pattern: re.Pattern[str]
    timeouts: dict[str, float]  # every phase: the engine's own, else DEFAULT_PHASE_TIMEOUT_S
    stop_grace_s: float
    stop_term_grace_s: float
    max_parallel: int | None
    validate: str | None
    env: dict[str, str] = field(default_factory=dict)  # added to the environment of every process
    preload: tuple[str, ...] = ()  # modules run with `{python} -m` that a fork server preloads
    metrics_keys: tuple[str, ...] = ()  # what a party's metrics line holds; () if not declared
    # processes of a trial started by a step that names them (a run submission, a status query)
    commands: dict[str, tuple[str, ...]] = field(default_factory=dict)
    strip_ansi: bool = False  # colour codes are taken out of output before anything reads it
    stop_tree: bool = False  # the stop ladder also signals descendants in sessions of their own
    files: tuple[tuple[str, str], ...] = ()  # (path in the trial directory, template text)
    # when set, `round` marks a round's start and these lines carry its records (dicts); the
    # round is finished when a record has `round_value`, which is the round's value
    round_records: re.Pattern[str] | None = None
    round_value: str | None = None
    # config keys naming modules (handler class paths) it also preloads, when they import
    preload_keys: tuple[str, ...] = ()
    files_hint: str = ""  # how to make the files `file_keys` name, said when one is missing
    python_hint: str = ""  # how to point SEEL at the engine's Python, said when it is not usable
    own_python: bool = False  # it runs in an environment of its own (`python:` set), not SEEL's
    cpus_per_trial: float = 1.0  # what one trial holds on a Ray node (all its processes at once)
    reuse: Reuse | None = None  # None: every trial starts its own processes

    def lifecycle_from(self, reused: bool) -> tuple[Step, ...]:
        """The steps a trial runs: all of them, or from `reuse.from_phase` on processes it reuses."""
        if not reused or self.reuse is None:
            return self.lifecycle
        first = next(i for i, s in enumerate(self.lifecycle) if s.phase == self.reuse.from_phase)
        return self.lifecycle[first:]

    @property
    def reports_round_values(self) -> bool:
        """Whether each finished round carries a value (the global accuracy) to prune on."""
        on_line = self.round_pattern is not None and "accuracy" in self.round_pattern.groupindex
        return on_line or (self.round_records is not None and self.round_value is not None)

    def round_line(self, text: str) -> RoundLine | None:
        """What an aggregator's line says of a finished round, or None if it is not one."""
        match = self.round_pattern.search(text) if self.round_pattern else None
        return parse_round(match) if match else None

    def metrics_line(self, text: str) -> dict[str, float] | None:
        """The metrics a party's line prints, or None if it is not a metrics line."""
        match = self.metrics_pattern.search(text)
        return parse_metrics(match.group("dict")) if match else None

    def with_timeouts(self, timeouts: dict[str, float]) -> Engine:
        """This engine with a sweep's phase timeouts laid over its own."""
        return replace(self, timeouts={**self.timeouts, **timeouts})

    def argv(self, process: ProcessDef, config: str) -> list[str]:
        """The command line of a process for a config file."""
        return [
            part.replace("{python}", self.python).replace("{config}", config)
            for part in process.command
        ]

    def preloaded(self) -> bool:
        """Whether a fork server would start any of this engine's processes."""
        return any(
            p.command[:2] == ("{python}", "-m")
            and len(p.command) > 2
            and p.command[2] in self.preload
            for p in (self.aggregator, self.party)
        )

    def validator(self) -> Validator | None:
        """The engine's config checker (`module:function`), if it has one."""
        if not self.validate:
            return None
        module, _, func = self.validate.partition(":")
        checker: Validator = getattr(importlib.import_module(module), func)
        return checker

    def usable(self) -> tuple[bool, str]:
        """Whether this engine can run here: its check command succeeds."""
        exe = self.check[0] if self.check else self.python
        if shutil.which(exe) is None and not os.path.exists(exe):
            return False, f"{exe} not found"
        try:
            done = subprocess.run(
                self.check, capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, str(exc)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["failed"])[-1]
            return False, last
        return True, "ok"
