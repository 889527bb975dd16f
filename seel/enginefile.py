"""Reading an engine definition: a YAML mapping (a shipped one in `seel/engines/`, or a sweep's
`engine:`) checked key by key into an `Engine`; a mistake is a SpecError naming the file and key.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import sys
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from seel.engine import (
    DEFAULT_PHASE_TIMEOUT_S,
    PHASES,
    Engine,
    Failure,
    ProcessDef,
    Reuse,
    Step,
    TomlEdit,
)
from seel.errors import SpecError

_PROCESSES = ("aggregator", "parties")
_STATUSES = ("timeout", "crashed", "failed")
_ENV = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def shipped_engines() -> list[str]:
    """Names of the engines that come with SEEL."""
    folder = resources.files("seel") / "engines"
    return sorted(p.name.removesuffix(".yml") for p in folder.iterdir() if p.name.endswith(".yml"))


def _expand_env(text: str) -> str:
    return _ENV.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), text)


class _Reader:
    """Typed access to a definition mapping, with errors naming the file and key."""

    def __init__(self, source: str, prefix: str) -> None:
        self.source = source
        self.prefix = prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, why: str) -> SpecError:
        return SpecError(self.source, self.key(name), why)

    def get(
        self, doc: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...
    ) -> Any:
        if name not in doc or doc[name] is None:
            if default is ...:
                raise self.fail(name, "missing")
            return default
        value = doc[name]
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            raise self.fail(name, f"expected {_kind_name(kind)}, got {value!r}")
        return value

    def strings(self, doc: dict[str, Any], name: str, default: Any = ()) -> tuple[str, ...]:
        value = self.get(doc, name, (list, str), default)
        items = [value] if isinstance(value, str) else list(value)
        if not all(isinstance(v, str) for v in items):
            raise self.fail(name, "expected a list of strings")
        return tuple(items)

    def dotted(self, doc: dict[str, Any], name: str, default: Any = ()) -> tuple[str, ...]:
        keys = self.strings(doc, name, default)
        for key in keys:
            if not key or any(part == "" for part in key.split(".")):
                raise self.fail(name, f"{key!r} is not a dotted path: it has an empty part")
        return keys

    def seconds(self, doc: dict[str, Any], name: str, default: float) -> float:
        """A finite number of seconds >= 0."""
        value = doc.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(name, f"expected seconds >= 0, got {value!r}")
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if not math.isfinite(seconds) or seconds < 0:
            raise self.fail(name, f"expected a finite number of seconds >= 0, got {value!r}")
        return seconds

    def regex(self, doc: dict[str, Any], name: str) -> re.Pattern[str] | None:
        text = self.get(doc, name, str, None)
        if text is None:
            return None
        try:
            return re.compile(text)
        except re.error as exc:
            raise self.fail(name, f"bad regular expression: {exc}") from None

    def check_keys(self, doc: dict[str, Any], allowed: set[str]) -> None:
        for name in doc:
            if name not in allowed:
                raise self.fail(str(name), "unknown key")


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _as_tuple(kind))


def _process(doc: Any, r: _Reader, party: bool) -> ProcessDef:
    if not isinstance(doc, dict):
        raise SpecError(r.source, r.prefix, "expected a mapping")
    allowed = {
        "command",
        "port_keys",
        "seed_keys",
        "path_keys",
        "file_keys",
        "stop_line",
        "toml_edits",
        "kill_at_round_key",
        "count_keys",
    }
    if party:
        allowed |= {"aggregator_port_keys", "index_keys", "unique_keys"}
    r.check_keys(doc, allowed)
    edits = []
    for i, edit in enumerate(r.get(doc, "toml_edits", list, [])):
        er = _Reader(r.source, r.key(f"toml_edits[{i}]"))
        if not isinstance(edit, dict):
            raise SpecError(r.source, er.prefix, "expected a mapping")
        er.check_keys(edit, {"dir", "file", "table", "values"})
        edits.append(
            TomlEdit(*(er.get(edit, name, str) for name in ("dir", "file", "table", "values")))
        )
    command = r.strings(doc, "command", ...)
    if not command:
        raise r.fail("command", "empty command")
    return ProcessDef(
        command=command,
        port_keys=r.dotted(doc, "port_keys", ...),
        aggregator_port_keys=r.dotted(doc, "aggregator_port_keys") if party else (),
        seed_keys=r.dotted(doc, "seed_keys"),
        path_keys=r.dotted(doc, "path_keys"),
        file_keys=r.dotted(doc, "file_keys"),
        stop_line=r.get(doc, "stop_line", str, None),
        toml_edits=tuple(edits),
        kill_at_round_key=r.get(doc, "kill_at_round_key", str, None),
        index_keys=r.dotted(doc, "index_keys") if party else (),
        count_keys=r.dotted(doc, "count_keys"),
        unique_keys=r.dotted(doc, "unique_keys") if party else (),
    )


def _step(doc: Any, r: _Reader, commands: dict[str, tuple[str, ...]]) -> Step:
    if not isinstance(doc, dict):
        raise SpecError(r.source, r.prefix, "expected a mapping")
    r.check_keys(
        doc,
        {
            "phase",
            "process",
            "send",
            "expect",
            "expect_metrics",
            "expect_exit",
            "capture",
            "expect_json",
        },
    )
    phase = r.get(doc, "phase", str)
    if phase not in PHASES:
        raise r.fail("phase", f"expected one of {', '.join(PHASES)}, got {phase!r}")
    process = r.get(doc, "process", str)
    if process not in _PROCESSES and process not in commands:
        names = ", ".join([*_PROCESSES, *commands])
        raise r.fail("process", f"expected one of {names}, got {process!r}")
    expect_json = r.get(doc, "expect_json", dict, {})
    for path, value in expect_json.items():
        if not isinstance(value, str | int | float | bool):
            raise r.fail(f"expect_json.{path}", f"expected a scalar, got {value!r}")
    step = Step(
        phase=phase,
        process=process,
        send=r.get(doc, "send", str, None),
        expect=r.strings(doc, "expect"),
        expect_metrics=r.get(doc, "expect_metrics", bool, False),
        expect_exit=r.get(doc, "expect_exit", bool, False),
        capture=r.regex(doc, "capture"),
        expect_json=tuple((str(k), _json_text(v)) for k, v in expect_json.items()),
    )
    if not (
        step.expect or step.expect_metrics or step.expect_exit or step.capture or step.expect_json
    ):
        raise SpecError(
            r.source,
            r.prefix,
            "a step needs expect, expect_metrics, expect_exit, capture or expect_json",
        )
    return step


def _json_text(value: str | int | float | bool) -> str:
    """A scalar as JSON text, so that an expected value compares with what a command printed."""
    return json.dumps(value)


def parse_engine(doc: Any, source: str, prefix: str = "") -> Engine:
    """Build an Engine from a definition mapping; SpecError names `source` and the key."""
    r = _Reader(source, prefix)
    if not isinstance(doc, dict):
        raise SpecError(source, prefix, "an engine definition must be a mapping")
    r.check_keys(
        doc,
        {
            "name",
            "description",
            "python",
            "check",
            "cwd",
            "aggregator",
            "party",
            "lifecycle",
            "failures",
            "round",
            "metrics",
            "timeouts",
            "stop",
            "max_parallel",
            "cpus_per_trial",
            "validate",
            "env",
            "preload",
            "metrics_keys",
            "commands",
            "strip_ansi",
            "stop_tree",
            "files",
            "round_records",
            "round_value",
            "preload_keys",
            "files_hint",
            "python_hint",
            "reuse",
        },
    )
    python = _expand_env(r.get(doc, "python", str, "")) or sys.executable
    commands: dict[str, tuple[str, ...]] = {}
    for name in r.get(doc, "commands", dict, {}):
        if name in _PROCESSES or not isinstance(name, str) or not name.isidentifier():
            raise r.fail(f"commands.{name}", "expected a name other than aggregator or parties")
        commands[name] = _Reader(source, r.key("commands")).strings(doc["commands"], name, ...)
        if not commands[name]:
            raise r.fail(f"commands.{name}", "empty command")
    lifecycle_doc = r.get(doc, "lifecycle", list)
    if not lifecycle_doc:
        raise r.fail("lifecycle", "no steps")
    lifecycle = tuple(
        _step(s, _Reader(source, r.key(f"lifecycle[{i}]")), commands)
        for i, s in enumerate(lifecycle_doc)
    )
    files = []
    for i, f in enumerate(r.get(doc, "files", list, [])):
        fr = _Reader(source, r.key(f"files[{i}]"))
        if not isinstance(f, dict):
            raise SpecError(source, fr.prefix, "expected a mapping")
        fr.check_keys(f, {"path", "text"})
        path = fr.get(f, "path", str)
        if Path(path).is_absolute() or ".." in Path(path).parts:
            raise fr.fail("path", "expected a path inside the trial directory")
        files.append((path, fr.get(f, "text", str)))
    round_records = r.regex(doc, "round_records")
    if round_records is not None and "dict" not in round_records.groupindex:
        raise r.fail("round_records", "needs a (?P<dict>...) group")
    failures = []
    for i, f in enumerate(r.get(doc, "failures", list, [])):
        fr = _Reader(source, r.key(f"failures[{i}]"))
        if not isinstance(f, dict):
            raise SpecError(source, fr.prefix, "expected a mapping")
        fr.check_keys(f, {"marker", "status", "retry"})
        status = fr.get(f, "status", str)
        if status not in _STATUSES:
            raise fr.fail("status", f"expected one of {', '.join(_STATUSES)}")
        failures.append(Failure(fr.get(f, "marker", str), status, fr.get(f, "retry", bool, False)))
    timeouts_doc = r.get(doc, "timeouts", dict, {})
    timeouts = dict.fromkeys(PHASES, DEFAULT_PHASE_TIMEOUT_S)
    tr = _Reader(source, r.key("timeouts"))
    for phase in timeouts_doc:
        if phase not in PHASES:
            raise tr.fail(str(phase), "unknown phase")
        timeouts[phase] = tr.seconds(timeouts_doc, phase, 0.0)
        if timeouts[phase] <= 0:
            raise tr.fail(phase, "expected seconds > 0")
    stop = r.get(doc, "stop", dict, {})
    sr = _Reader(source, r.key("stop"))
    sr.check_keys(stop, {"grace_s", "term_grace_s"})
    validate = r.get(doc, "validate", str, None)
    if validate:
        _check_validator(validate, r)
    metrics = r.regex(doc, "metrics")
    if metrics is None or "dict" not in metrics.groupindex:
        raise r.fail("metrics", "a regular expression with a (?P<dict>...) group is required")
    round_pattern = r.regex(doc, "round")
    if round_pattern is not None and "round" not in round_pattern.groupindex:
        raise r.fail("round", "needs a (?P<round>...) group")
    cwd = r.get(doc, "cwd", str, "trial")
    if cwd not in ("trial", "config"):
        raise r.fail("cwd", "expected trial or config")
    max_parallel = r.get(doc, "max_parallel", int, None)
    cpus_per_trial = float(r.get(doc, "cpus_per_trial", (int, float), 1))
    if not cpus_per_trial > 0:
        raise r.fail("cpus_per_trial", f"expected a number above 0, got {cpus_per_trial:g}")
    env = r.get(doc, "env", dict, {})
    for name, value in env.items():
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise r.fail(f"env.{name}", f"expected a string, got {value!r}")
    return Engine(
        name=r.get(doc, "name", str, "custom"),
        description=r.get(doc, "description", str, ""),
        python=python,
        check=tuple(p.replace("{python}", python) for p in r.strings(doc, "check")),
        cwd=cwd,
        aggregator=_process(
            r.get(doc, "aggregator", dict), _Reader(source, r.key("aggregator")), party=False
        ),
        party=_process(r.get(doc, "party", dict), _Reader(source, r.key("party")), party=True),
        lifecycle=lifecycle,
        failures=tuple(failures),
        round_pattern=round_pattern,
        metrics_pattern=metrics,
        timeouts=timeouts,
        stop_grace_s=sr.seconds(stop, "grace_s", 2.0),
        stop_term_grace_s=sr.seconds(stop, "term_grace_s", 2.0),
        max_parallel=max_parallel,
        validate=validate,
        env={str(k): _expand_env(str(v)) for k, v in env.items()},
        preload=r.strings(doc, "preload"),
        metrics_keys=r.strings(doc, "metrics_keys"),
        commands=commands,
        strip_ansi=r.get(doc, "strip_ansi", bool, False),
        stop_tree=r.get(doc, "stop_tree", bool, False),
        files=tuple(files),
        round_records=round_records,
        round_value=r.get(doc, "round_value", str, None),
        preload_keys=r.dotted(doc, "preload_keys"),
        files_hint=r.get(doc, "files_hint", str, ""),
        python_hint=r.get(doc, "python_hint", str, ""),
        own_python=bool(r.get(doc, "python", str, "")),
        cpus_per_trial=cpus_per_trial,
        reuse=_reuse(doc, r, lifecycle, commands),
    )


def _reuse(
    doc: dict[str, Any], r: _Reader, lifecycle: tuple[Step, ...], commands: dict[str, Any]
) -> Reuse | None:
    """The `reuse:` mapping: which trials may share processes, and where a sharing trial starts."""
    spec = r.get(doc, "reuse", dict, None)
    if spec is None:
        return None
    rr = _Reader(r.source, r.key("reuse"))
    rr.check_keys(spec, {"when_only", "from_phase"})
    when_only = rr.dotted(spec, "when_only", ...)
    if not when_only:
        raise rr.fail("when_only", "expected at least one aggregator config key")
    from_phase = rr.get(spec, "from_phase", str)
    phases = [s.phase for s in lifecycle]
    if from_phase not in phases:
        raise rr.fail(
            "from_phase",
            f"expected a phase of the lifecycle ({', '.join(dict.fromkeys(phases))}), got {from_phase!r}",
        )
    if "stop" in phases:
        raise rr.fail(
            "from_phase", "the lifecycle has a stop phase: its processes end with each trial"
        )
    first = phases.index(from_phase)
    for step in lifecycle[:first]:
        if step.process in commands:
            raise rr.fail(
                "from_phase",
                f"the {step.phase} phase, which a reused deployment skips, starts the command"
                f" {step.process!r}: commands belong to each trial",
            )
    return Reuse(when_only, from_phase)


def _check_validator(spec: str, r: _Reader) -> None:
    """`module:function` names something callable that can be imported."""
    module, sep, func = spec.partition(":")
    if not sep or not module or not func:
        raise r.fail("validate", f"expected module:function, got {spec!r}")
    try:
        target = getattr(importlib.import_module(module), func)
    except ImportError as exc:
        raise r.fail("validate", f"cannot import {module}: {exc}") from None
    except AttributeError:
        raise r.fail("validate", f"{module} has no {func}") from None
    if not callable(target):
        raise r.fail("validate", f"{spec} is not callable")


def load_engine(spec: str | dict[str, Any], source: str, python: str | None = None) -> Engine:
    """A shipped engine by name, or a definition from a sweep file (`engine:` mapping)."""
    if isinstance(spec, dict):
        base = spec.get("extends")
        if isinstance(base, str):
            doc = {
                **_shipped_doc(base, source),
                **{k: v for k, v in spec.items() if k != "extends"},
            }
        else:
            doc = spec
        engine = parse_engine(doc, source, "engine")
    else:
        engine = parse_engine(_shipped_doc(spec, source), f"seel/engines/{spec}.yml")
    if python:
        engine = _with_python(engine, python)
    return engine


def _with_python(engine: Engine, python: str) -> Engine:
    check = tuple(python if part == engine.python else part for part in engine.check)
    return replace(engine, python=python, check=check)


def _shipped_doc(name: str, source: str) -> dict[str, Any]:
    if name not in shipped_engines():
        raise SpecError(
            source, "engine", f"unknown engine {name!r} (shipped: {', '.join(shipped_engines())})"
        )
    text = (resources.files("seel") / "engines" / f"{name}.yml").read_text(encoding="utf-8")
    doc: dict[str, Any] = YAML(typ="safe", pure=True).load(text)
    return doc
