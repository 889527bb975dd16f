"""Properties of what SEEL reads: sweep files, value ranges and the metrics lines children print.

Whatever the input, the answer is a result or one SpecError whose message is a single line that
starts with the file it is about; never another exception. Nothing read is ever run as code.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import math
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from seel import yamledit
from seel.engine import parse_metrics
from seel.errors import SpecError, one_line
from seel.fl.config import load_yaml
from seel.grammar import COMMAND_LINE, ValueSpecError, parse_value_spec
from seel.grid import trial_at
from seel.run import RunSettings, default_out, prepare
from seel.sweep import load_sweep
from tests.flkit import agg_doc, party_doc

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(FAST, max_examples=60)  # each example loads and renders a few YAML files
QUICK = settings(max_examples=300, deadline=None)

BASE_SWEEP: dict[str, Any] = {
    "name": "props",
    "configs": {"aggregator": "agg.yml", "parties": ["party0.yml", "party1.yml"]},
    "parameters": {
        "hyperparams.global.rounds": {"values": [1, 2]},
        "hyperparams.local.optimizer.lr": {"min": 0.05, "max": 0.5, "step": 0.05},
        "party.simulation.delay_s": {
            "random": "uniform",
            "low": 0.0,
            "high": 1.0,
            "count": 2,
            "seed": 0,
        },
    },
    "repeats": 1,
    "seed": 0,
    "timeouts": {"train": 60},
    "parallel": 2,
    "port_range": "6000-6999",
}

# Names a mutation may use: every top-level key, value-spec field, config key and party form,
# next to random text, so most mutations land somewhere the parser looks.
NAMES = [
    *BASE_SWEEP,
    "description",
    "engine",
    "aggregator",
    "parties",
    *("min", "max", "step", "values", "random", "low", "high", "count"),
    *("init", "start", "register", "train", "eval", "stop"),
    "hyperparams.global.rounds",
    "hyperparams.global.max_timeout",
    "hyperparams.global.perc_quorum",
    "hyperparams.global.num_parties",
    "hyperparams.global.termination_accuracy",
    "hyperparams.local.training.epochs",
    "hyperparams.local.optimizer.lr",
    "hyperparams.local",
    "transport.max_message_mb",
    "connection.info.port",
    "fusion.name",
    "model.name",
    "data.info.seed",
    "party.simulation.delay_s",
    "party.simulation.drop_rate",
    "party.transport.max_message_mb",
    "party[0].data.info.alpha",
    "party[1].simulation.crash_at_round",
    "party[2].data.info.alpha",
    "parties.count",
    "party[-1].data.info.alpha",
    "party[x].data",
    "party.",
    "party",
    "a..b",
    "",
]

HUGE = [10**400, -(10**400), 2**63, -(2**63) - 1, 2**64, 5e-324, 1.7976931348623157e308]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["uniform", "loguniform", "int", "builtin", "6000-6999", "\ud800", "a/b"]),
)
KEYS = st.one_of(st.sampled_from(NAMES), st.text(max_size=8), st.integers(-2, 3), st.none())
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)


def dump(doc: Any) -> str:
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(doc, out)
    return out.getvalue()


# Where a mutation lands: below each top-level key, the names the parser looks for there.
BELOW = {
    "parameters": [n for n in NAMES if "." in n or n.startswith("party")],
    "configs": ["aggregator", "parties"],
    "timeouts": ["init", "start", "register", "train", "eval", "stop"],
}
FIELDS = ["min", "max", "step", "values", "random", "low", "high", "count", "seed"]


@st.composite
def mutation_paths(draw: st.DrawFn) -> list[Any]:
    """A path into a sweep document, mostly through the names the parser knows."""
    top = st.sampled_from([*BASE_SWEEP, "description", "engine"])
    path = [draw(top | top | top | KEYS)]
    below = BELOW.get(path[0])
    if below is not None and draw(st.booleans()):
        path.append(draw(st.sampled_from(below) | st.sampled_from(below) | KEYS))
        if path[0] == "parameters" and draw(st.booleans()):
            path.append(draw(st.sampled_from(FIELDS) | KEYS))
        elif path[0] == "configs" and path[1] == "parties" and draw(st.booleans()):
            path.append(draw(st.integers(-1, 2)))
    return path


@st.composite
def mutated_sweeps(draw: st.DrawFn) -> dict[str, Any]:
    """The valid base sweep with one to three keys set to arbitrary values or deleted."""
    doc = copy.deepcopy(BASE_SWEEP)
    for _ in range(draw(st.integers(1, 3))):
        *parents, leaf = draw(mutation_paths())
        node: Any = doc
        for part in parents:
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict | list):
                child = {}
                node[part] = child
            node = child
        if isinstance(node, list):
            if isinstance(leaf, int) and -len(node) <= leaf < len(node):
                node[leaf] = draw(VALUES)
        elif draw(st.integers(0, 4)) == 0:
            node.pop(leaf, None)
        else:
            node[leaf] = draw(VALUES)
    return doc


OVERRIDE_KEYS = st.sampled_from(
    [n for n in NAMES if "." in n or n in ("repeats", "seed", "parallel", "port_range")]
)
OVERRIDE_VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "range(1,5)",
            "range(0.95,1,0.01)",
            "range(1,1)",
            "range(1,5,0)",
            "range(5,1,-1)",
            "range(1" + "0" * 400 + ",2)",
            "range(1e400,2)",
            "range(,)",
            "1,2",
            "1,,2",
            "'a,b'",
            "'unterminated",
            "0x1F",
            ".nan",
            "-.inf",
            "null",
            "true",
            "1" + "0" * 5000,
        ]
    ),
)
OVERRIDES = st.just([]) | st.lists(
    st.one_of(
        st.text(max_size=20), st.builds(lambda k, v: f"{k}={v}", OVERRIDE_KEYS, OVERRIDE_VALUES)
    ),
    max_size=3,
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Configs for the built-in engine, with nulls and a transport section to sweep into."""
    root = tmp_path_factory.mktemp("props")
    agg = agg_doc(5000, termination_accuracy=None, max_timeout=None)
    agg["transport"] = {"max_message_mb": 64}
    agg["fusion"]["path"] = "ibmfl.aggregator.fusion.iter_avg_fusion_handler"  # read, not used
    agg["info"] = {"note": None}  # anything goes here
    (root / "agg.yml").write_text(json.dumps(agg), encoding="utf-8")
    for i in range(2):
        party = party_doc(i, 2, 5000, 8000 + i, delay_s=0.0, drop_rate=0.0, crash_at_round=None)
        party["data"]["info"]["alpha"] = 0.5
        party["transport"] = {"max_message_mb": 64}
        (root / f"party{i}.yml").write_text(json.dumps(party), encoding="utf-8")
    return root


def check_error(exc: SpecError, project: Path) -> None:
    """A clean error: one printable line, starting with the file (or command line) it is about."""
    message = str(exc)
    assert message.isprintable(), repr(message)
    assert message.startswith(one_line(exc.file)), (message, exc.file)
    assert exc.file == COMMAND_LINE or Path(exc.file).is_absolute(), exc.file
    if exc.key:
        assert one_line(exc.key) in message


def check_valid(project: Path, overrides: list[str]) -> None:
    """prepare() as `seel run` calls it; a sweep that passes must also render its first trial."""
    try:
        plan = prepare(RunSettings(sweep=project / "sweep.yml", overrides=tuple(overrides)))
        spec = plan.spec
    except SpecError as exc:
        check_error(exc, project)
        event(f"error at {exc.key.split('.')[0] or Path(exc.file).name}")
        return
    event("valid")
    assert spec.trial_count() >= 1
    assert default_out(spec).parent == Path("runs")  # the name is one directory, not a path
    for index in {0, spec.trial_count() - 1}:
        trial = trial_at(spec, index)
        agg, parties = plan.docs_for(trial, list(range(7000, 7000 + 1 + plan.n_parties)))
        rendered = []
        for i, doc in enumerate((agg, *parties)):
            path = project / "rendered" / f"{i}.yml"
            path.parent.mkdir(exist_ok=True)
            path.write_text(yamledit.dump(doc), encoding="utf-8")
            rendered.append(load_yaml(path))  # as the engine reads it
        for param in spec.parameters:
            want = trial.params[param.name]
            if param.target.process == "aggregator":
                docs = rendered[:1]
            elif param.target.party_index is None:
                docs = rendered[1:]
            else:
                docs = [rendered[1 + param.target.party_index]]
            for doc in docs:
                got = yamledit.get_path(doc, param.target.path)
                assert same(got, want), (param.name, got, want)


def same(a: Any, b: Any) -> bool:
    """Equal, with the same type (1 is not 1.0 nor True); NaN is the same as NaN."""
    if type(a) is not type(b):
        return False
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def test_the_base_sweep_is_valid(project: Path) -> None:
    (project / "sweep.yml").write_text(dump(BASE_SWEEP), encoding="utf-8")
    spec = prepare(RunSettings(sweep=project / "sweep.yml")).spec
    assert spec.trial_count() == 2 * 10 * 2


@FAST
@given(doc=mutated_sweeps(), overrides=OVERRIDES)
def test_mutated_sweep_is_valid_or_one_clean_error(
    project: Path, doc: dict[str, Any], overrides: list[str]
) -> None:
    (project / "sweep.yml").write_text(dump(doc), encoding="utf-8")
    check_valid(project, overrides)


TYPED = {
    "fusion.path": st.text(),
    "info.note": SCALARS,
    "hyperparams.global.rounds": st.integers(-1, 5) | st.sampled_from(HUGE),
    "hyperparams.local.optimizer.lr": st.floats() | st.integers(-1, 3),
    "transport.max_message_mb": st.integers(-1, 100) | st.sampled_from([10**303, 10**400]),
    "party.transport.max_message_mb": st.floats() | st.sampled_from([10**303, 10**400]),
    "party[1].simulation.drop_rate": st.floats(),
    "hyperparams.global.termination_accuracy": SCALARS,
    "hyperparams.global.max_timeout": SCALARS,
    "party[0].connection.info.ip": st.text(),
}


@SLOW
@given(
    swept=st.dictionaries(
        st.sampled_from(sorted(TYPED)), st.just(None), min_size=1, max_size=3
    ).flatmap(
        lambda keys: st.fixed_dictionaries(
            {k: st.lists(TYPED[k], min_size=1, max_size=3) for k in keys}
        )
    )
)
def test_swept_values_reach_the_trial_configs_exactly(
    project: Path, swept: dict[str, list[Any]]
) -> None:
    doc = {k: v for k, v in BASE_SWEEP.items() if k != "parameters"}
    doc["parameters"] = {key: {"values": values} for key, values in swept.items()}
    (project / "sweep.yml").write_text(dump(doc), encoding="utf-8")
    check_valid(project, [])


YAML_TOKENS = st.sampled_from(
    [
        "configs:",
        " aggregator: agg.yml",
        " parties: [party0.yml, party1.yml]",
        "parameters:",
        " hyperparams.global.rounds:",
        " party[0].data.info.alpha:",
        "name:",
        "timeouts:",
        "{",
        "}",
        "[",
        "]",
        ":",
        ", ",
        "- ",
        "? ",
        "\n",
        "\n  ",
        "  ",
        "#",
        "'",
        '"',
        "&a ",
        "*a",
        "*b",
        "<<: ",
        "!!int ",
        "!!float ",
        "!!timestamp ",
        "!!binary ",
        "!!omap ",
        "!!set ",
        "!!python/object:os.system ",
        "!tag ",
        "%YAML 1.2\n",
        "---\n",
        "...\n",
        "\t",
        "\x00",
        "\ufeff",
        "\x85",
        "\u2028",
        "\\ud800",
        "\\x00",
        "min: ",
        "max: ",
        "step: ",
        "values: ",
        "random: ",
        "low: ",
        "high: ",
        "count: ",
        "seed: ",
        "0.95",
        "0.01",
        "-1",
        "0",
        "1e999",
        ".nan",
        "-.inf",
        "0x1F",
        "0o17",
        "2001-02-30",
        "2001-12-14t21:59:43.10-05:00",
        "~",
        "null",
        "true",
        "yes",
        "1_000",
        "9" * 30,
        "[[[[",
        "{a: ",
        "é",
        "\U0001f600",
    ]
)
YAMLISH = st.lists(YAML_TOKENS, max_size=30).map("".join)


@FAST
@given(text=st.one_of(YAMLISH, st.text(), st.binary()))
@example(text="configs: {aggregator: agg.yml, parties: [party0.yml]}\nname: !!int x\n")
@example(text="configs: {aggregator: agg.yml, parties: [party0.yml]}\nx: " + "[" * 500)
@example(text="configs: {aggregator: agg.yml, parties: [party0.yml]}\nseed: " + "9" * 5000)
@example(text='configs: {aggregator: agg.yml, parties: [party0.yml]}\nname: "a\\ud800"\n')
@example(text='configs: {aggregator: agg.yml, parties: [party0.yml]}\n"a\\nb": 1\n')
@example(text="configs: {aggregator: agg.yml, parties: [party0.yml]}\nx: \x00\n")
def test_any_text_is_a_sweep_or_one_clean_error(project: Path, text: str | bytes) -> None:
    path = project / "sweep.yml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    check_valid(project, [])


@SLOW
@given(text=st.one_of(YAMLISH, st.text()))
def test_any_text_in_a_config_is_a_sweep_or_one_clean_error(project: Path, text: str) -> None:
    (project / "sweep.yml").write_text(dump(BASE_SWEEP), encoding="utf-8")
    config = project / "party1.yml"
    good = config.read_text(encoding="utf-8")
    config.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        with pytest.raises(SpecError) as info:
            load_sweep(project / "sweep.yml")
        check_error(info.value, project)
    finally:
        config.write_text(good, encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# {min, max, step}


def expand(low: Any, high: Any, step: Any) -> tuple[Any, ...]:
    return parse_value_spec({"min": low, "max": high, "step": step}).grid_values()


@QUICK
@given(low=st.integers(-(10**6), 10**6), span=st.integers(0, 10**4), step=st.integers(1, 10**3))
def test_int_range_is_every_step_from_min_to_max(low: int, span: int, step: int) -> None:
    values = expand(low, low + span, step)
    assert len(values) == span // step + 1
    assert all(type(v) is int for v in values)
    assert values[0] == low and values[-1] <= low + span < values[-1] + step
    assert all(b - a == step for a, b in itertools.pairwise(values))


@st.composite
def decimal_ranges(draw: st.DrawFn) -> tuple[Decimal, Decimal, Decimal]:
    places = draw(st.integers(0, 4))
    unit = Decimal(1).scaleb(-places)
    low = draw(st.integers(-(10**6), 10**6)) * unit
    step = draw(st.integers(1, 10**4)) * unit
    high = low + draw(st.integers(0, 2000)) * step + draw(st.integers(0, 10**4)) * unit
    return low, high, step


@QUICK
@given(bounds=decimal_ranges())
@example(bounds=(Decimal("0.95"), Decimal("0.99"), Decimal("0.01")))
@example(bounds=(Decimal("0.1"), Decimal("0.3"), Decimal("0.1")))
@example(bounds=(Decimal("-0.3"), Decimal("0.3"), Decimal("0.1")))
def test_float_range_is_decimal_exact(bounds: tuple[Decimal, Decimal, Decimal]) -> None:
    low, high, step = bounds
    values = expand(float(low), float(high), float(step))
    count = int(((high - low) / step).to_integral_value(rounding=ROUND_FLOOR)) + 1
    assert values == tuple(float(low + i * step) for i in range(count))
    assert all(type(v) is float for v in values)
    assert all(a < b for a, b in itertools.pairwise(values))
    assert values[0] == float(low) and Decimal(repr(values[-1])) <= high
    if low == Decimal("0.95") and step == Decimal("0.01"):
        assert values == (0.95, 0.96, 0.97, 0.98, 0.99)


@QUICK
@given(bounds=decimal_ranges(), which=st.sampled_from(["min", "max", "step"]))
def test_one_float_bound_makes_every_value_a_float(
    bounds: tuple[Decimal, Decimal, Decimal], which: str
) -> None:
    low, high, step = (int(b * 10**4) for b in bounds)
    fields = {"min": low, "max": high, "step": step}
    fields[which] = float(fields[which])
    values = parse_value_spec(fields).grid_values()
    assert all(type(v) is float for v in values)
    assert values == tuple(float(v) for v in expand(low, high, step))


NUMBERS = st.one_of(st.integers(), st.floats(), st.sampled_from(HUGE), st.booleans(), st.none())


@QUICK
@given(low=NUMBERS, high=NUMBERS, step=NUMBERS)
@example(low=0, high=4, step=0)
@example(low=0, high=4, step=-1)
@example(low=4, high=0, step=1)
@example(low=0.0, high=1.0, step=5e-324)
@example(low=10**400, high=10**400 + 2, step=1)
def test_bad_range_is_a_value_spec_error(low: Any, high: Any, step: Any) -> None:
    try:
        values = expand(low, high, step)
    except ValueSpecError as exc:
        assert exc.field in ("min", "max", "step", None)
        if exc.why == "step must be > 0":
            assert step <= 0
        if exc.why.startswith("empty range"):
            assert low > high
        return
    assert step > 0 and low <= high
    if any(isinstance(x, float) for x in (low, high, step)):
        low, high = float(low), float(high)
    assert values[0] == low and values[-1] <= high
    assert all(a < b for a, b in itertools.pairwise(values))


@SLOW
@given(bounds=decimal_ranges())
def test_a_range_written_in_a_sweep_file_is_the_same_range(
    project: Path, bounds: tuple[Decimal, Decimal, Decimal]
) -> None:
    low, high, step = bounds
    text = dump({k: v for k, v in BASE_SWEEP.items() if k != "parameters"})
    text += f"parameters:\n  hyperparams.local.optimizer.lr: {{min: {low}, max: {high}, step: {step}}}\n"
    (project / "sweep.yml").write_text(text, encoding="utf-8")
    (param,) = load_sweep(project / "sweep.yml").parameters
    assert param.values == expand(float(low), float(high), float(step))


# ---------------------------------------------------------------------------------------------
# Metrics lines


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sentinel") / "evaluated"


def payloads(target: Path) -> list[str]:
    """Expressions that create `target` if anything evaluates them."""
    t = str(target)
    return [
        f"__import__('os').system('touch {t}')",
        f"__import__('pathlib').Path('{t}').touch()",
        f"open('{t}', 'w').close()",
        f"(lambda: open('{t}', 'w').close())()",
        f"[open('{t}', 'w').close() for _ in '1']",
        f"exec(\"open('{t}', 'w').close()\")",
    ]


def metric_lines(target: Path) -> st.SearchStrategy[str]:
    tokens = st.sampled_from(
        [
            "{",
            "}",
            "{'acc': ",
            "'loss': ",
            "'a'",
            ": ",
            ", ",
            "[",
            "]",
            "(",
            ")",
            "-",
            "+",
            "0.5",
            "1e999",
            "-1e999",
            "1j",
            "True",
            "None",
            "nan",
            "inf",
            "b'x'",
            "'\\x00'",
            "\\",
            "'",
            '"',
            "{'a': {'b': ",
            "9" * 300,
            "0x1F",
            "1_000",
            "...",
            "\x00",
            "\ud800",
            "\x1b[31m",
            "\n",
            *payloads(target),
        ]
    )
    return st.one_of(st.lists(tokens, max_size=20).map("".join), st.text())


def is_metrics(parsed: object) -> bool:
    return parsed is None or (
        isinstance(parsed, dict)
        and all(isinstance(k, str) and type(v) is float for k, v in parsed.items())
    )


def test_the_payloads_would_run_if_evaluated(tmp_path: Path) -> None:
    for i, payload in enumerate(payloads(tmp_path / "x")):
        live = tmp_path / f"live{i}"
        eval(payload.replace(str(tmp_path / "x"), str(live)))  # the control: these are live
        assert live.exists(), payload


def test_a_line_with_code_is_no_metrics_and_never_runs(sentinel: Path) -> None:
    for payload in payloads(sentinel):
        for line in (f"{{'acc': {payload}}}", f"{{'acc': 0.5, 'x': {payload}}}", payload):
            assert parse_metrics(line) is None, line
    assert not sentinel.exists()


@QUICK
@given(data=st.data())
def test_any_line_is_metrics_or_none_and_never_runs(sentinel: Path, data: st.DataObject) -> None:
    line = data.draw(metric_lines(sentinel))
    parsed = parse_metrics(line)
    assert is_metrics(parsed), (line, parsed)
    assert not sentinel.exists(), line


METRIC_VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(10**300), 10**300),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
)


@QUICK
@given(metrics=st.dictionaries(st.text(min_size=1, max_size=20), METRIC_VALUES, max_size=12))
def test_a_printed_dict_keeps_exactly_its_numbers(metrics: dict[str, Any]) -> None:
    parsed = parse_metrics(repr(metrics))
    want = {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    assert parsed == want


def test_an_integer_beyond_float_range_is_no_metric() -> None:
    assert parse_metrics("{'acc': 1" + "0" * 400 + ", 'loss': 0.5}") == {"loss": 0.5}


def test_nan_and_inf_are_read_as_python_prints_them() -> None:
    got = parse_metrics("{'loss': nan, 'acc': 0.9, 'f1': inf, 'x': -inf}")
    assert got is not None and math.isnan(got["loss"])
    assert {k: v for k, v in got.items() if k != "loss"} == {"acc": 0.9, "f1": math.inf, "x": -math.inf}
    assert parse_metrics("{'acc': nan_or_code}") is None
