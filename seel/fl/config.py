"""Load and check aggregator and party configs in IBM FL's shape.

A config is checked against a schema before anything starts: every key must be known and of the
right type, and handler names that the engine cannot emulate are rejected by name. Keys that IBM FL
uses for class paths (`path`, `cls_ref`) are accepted and ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_HOST = "127.0.0.1"


class ConfigError(Exception):
    """A config that cannot be used; names the file and the dotted key."""

    def __init__(self, path: Path | str, key: str, why: str) -> None:
        self.path = str(path)
        self.key = key
        self.why = why
        where = f"{self.path}: {key}" if key else self.path
        super().__init__(f"{where}: {why}")


# --- schema ----------------------------------------------------------------------------------


class _Kind:
    """A scalar type in the schema, with the name used in error messages."""

    def __init__(self, name: str, *types: type, check: Any = None) -> None:
        self.name = name
        self.types = types
        self.check = check

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) and bool not in self.types:
            return False
        if not isinstance(value, self.types):
            return False
        return self.check is None or bool(self.check(value))


def _finite(value: int | float) -> bool:
    """Whether a number is finite as a float; an int too large for a float is not."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


INT = _Kind("an integer", int)
NUMBER = _Kind("a number", int, float, check=_finite)
BOOL = _Kind("true or false", bool)
STR = _Kind("a string", str)
PORT = _Kind("a port number (0-65535)", int, check=lambda v: 0 <= v <= 65535)
ANY = _Kind("anything", object)

Schema = dict[str, "Schema | _Kind"]

_HANDLER: Schema = {"name": STR, "path": STR, "cls_ref": STR}
_CONNECTION: Schema = {
    "name": STR,
    "path": STR,
    "cls_ref": STR,
    "sync": BOOL,
    "info": {"ip": STR, "port": PORT, "tls_config": ANY, "headers": ANY},
}
_DATA: Schema = {
    "name": STR,
    "path": STR,
    "cls_ref": STR,
    "info": {
        "dataset": STR,
        "npz_file": STR,
        "split": STR,
        "alpha": NUMBER,
        "seed": INT,
        "party_index": INT,
        "num_parties": INT,
        "validation_fraction": NUMBER,
        "test_fraction": NUMBER,
        "num_classes": INT,
    },
}
_MODEL: Schema = {
    "name": STR,
    "path": STR,
    "cls_ref": STR,
    "spec": {
        "model_name": STR,
        "model_definition": ANY,
        "kind": STR,
        "hidden": INT,
        "seed": INT,
        "num_classes": INT,
    },
    "info": ANY,
}
_LOCAL: Schema = {
    "training": {"epochs": INT, "batch_size": INT, "max_iter": INT},
    "optimizer": {"lr": NUMBER},
}
_GLOBAL: Schema = {
    "rounds": INT,
    "max_timeout": ANY,  # checked in _global_hyperparams: a number or null
    "perc_quorum": NUMBER,
    "num_parties": INT,
    "termination_accuracy": NUMBER,
}
# Sections IBM FL configs carry that do not change what this engine does.
_IGNORED: Schema = {"metrics_recorder": ANY, "privacy": ANY, "evidencia": ANY, "info": ANY}

AGGREGATOR_SCHEMA: Schema = {
    "aggregator": {"ip": STR, "port": PORT},
    "connection": _CONNECTION,
    "data": _DATA,
    "fusion": _HANDLER,
    "hyperparams": {"global": _GLOBAL, "local": _LOCAL},
    "model": _MODEL,
    "protocol_handler": _HANDLER,
    "transport": {"max_message_mb": NUMBER},
    **_IGNORED,
}
PARTY_SCHEMA: Schema = {
    "aggregator": {"ip": STR, "port": PORT},
    "connection": _CONNECTION,
    "data": _DATA,
    "hyperparams": {"local": _LOCAL},
    "local_training": _HANDLER,
    "model": _MODEL,
    "protocol_handler": _HANDLER,
    "transport": {"max_message_mb": NUMBER},
    "simulation": {
        "delay_s": NUMBER,
        "jitter_s": NUMBER,
        "crash_at_round": INT,
        "hang_at_round": INT,
        "drop_rate": NUMBER,
        "seed": INT,
    },
    **_IGNORED,
}


def check_schema(doc: Any, schema: Schema, path: Path | str, prefix: str = "") -> None:
    """Raise ConfigError for the first unknown or ill-typed key of `doc`."""
    if not isinstance(doc, dict):
        raise ConfigError(path, prefix, f"expected a mapping, got {_type_name(doc)}")
    for key, value in doc.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in schema:
            raise ConfigError(path, dotted, "unknown key")
        expected = schema[key]
        if isinstance(expected, dict):
            if value is None:
                continue
            check_schema(value, expected, path, dotted)
        elif value is not None and not expected.accepts(value):
            raise ConfigError(path, dotted, f"expected {expected.name}, got {value!r}")


def _type_name(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


# --- loading ---------------------------------------------------------------------------------


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; any failure becomes a ConfigError naming the file."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"cannot read: {exc}") from None
    try:
        doc = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(path, "", f"malformed YAML{where}: {problem}") from None
    if doc is None:
        raise ConfigError(path, "", "empty config")
    if not isinstance(doc, dict):
        raise ConfigError(path, "", f"expected a mapping at the top, got {_type_name(doc)}")
    return doc


def _get(doc: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or node.get(part) is None:
            return default
        node = node[part]
    return node


# --- typed views -----------------------------------------------------------------------------

FUSIONS = ("IterAvgFusionHandler", "FedAvgFusionHandler")
_CONNECTIONS = ("FlaskConnection",)
_PROTOCOLS = ("ProtoHandler", "PartyProtocolHandler")
_LOCAL_TRAINING = ("LocalTrainingHandler",)
_MODEL_KINDS = {
    "logistic": "logistic",
    "LogisticRegression": "logistic",
    "SklearnSGDFLModel": "logistic",
    "mlp": "mlp",
    "MLP": "mlp",
}


@dataclass(frozen=True)
class Endpoint:
    """A host and port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class LocalParams:
    """Local training hyperparameters (`hyperparams.local`)."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.5

    def to_wire(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}


@dataclass(frozen=True)
class DataSpec:
    """Where a process's data comes from and how it is split."""

    dataset: str = "digits"
    npz_file: Path | None = None
    split: str = "iid"
    alpha: float = 0.5
    seed: int = 0
    party_index: int = 0
    num_parties: int = 1
    validation_fraction: float = 0.2
    test_fraction: float = 0.2
    num_classes: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    """The model to train: multinomial logistic regression or a one-hidden-layer MLP."""

    kind: str = "logistic"
    hidden: int = 32
    seed: int = 0
    num_classes: int | None = None


@dataclass(frozen=True)
class Simulation:
    """Straggler and fault knobs of a party (`simulation:`)."""

    delay_s: float = 0.0
    jitter_s: float = 0.0
    crash_at_round: int | None = None
    hang_at_round: int | None = None
    drop_rate: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class AggregatorConfig:
    """Everything the aggregator reads from its config."""

    path: Path
    listen: Endpoint
    fusion: str
    rounds: int
    max_timeout_s: float | None
    perc_quorum: float
    num_parties: int
    termination_accuracy: float | None
    local: LocalParams
    data: DataSpec | None
    model: ModelSpec
    max_message_bytes: int


@dataclass(frozen=True)
class PartyConfig:
    """Everything a party reads from its config."""

    path: Path
    listen: Endpoint
    aggregator: Endpoint
    data: DataSpec
    model: ModelSpec
    local_overrides: dict[str, Any] = field(default_factory=dict)
    simulation: Simulation = Simulation()
    max_message_bytes: int = 64 << 20


def _require_name(doc: dict[str, Any], section: str, allowed: tuple[str, ...], path: Path) -> None:
    name = _get(doc, f"{section}.name")
    if name is not None and name not in allowed:
        raise ConfigError(
            path,
            f"{section}.name",
            f"{name} is not supported by seel.fl (use {' or '.join(allowed)})",
        )


def _data_spec(doc: dict[str, Any], path: Path) -> DataSpec:
    info = _get(doc, "data.info", {})
    npz = info.get("npz_file")
    npz_path = None
    if npz is not None:
        npz_path = Path(npz) if Path(npz).is_absolute() else path.parent / npz
        if not npz_path.exists():
            raise ConfigError(path, "data.info.npz_file", f"no such file: {npz_path}")
    dataset = info.get("dataset", "digits")
    if npz is None and dataset != "digits":
        raise ConfigError(
            path, "data.info.dataset", f"unknown dataset {dataset!r} (use digits or npz_file)"
        )
    split = info.get("split", "iid")
    if split not in ("iid", "dirichlet"):
        raise ConfigError(path, "data.info.split", f"expected iid or dirichlet, got {split!r}")
    spec = DataSpec(
        dataset=dataset,
        npz_file=npz_path,
        split=split,
        alpha=float(info.get("alpha", 0.5)),
        seed=int(info.get("seed", 0)),
        party_index=int(info.get("party_index", 0)),
        num_parties=int(info.get("num_parties", 1)),
        validation_fraction=float(info.get("validation_fraction", 0.2)),
        test_fraction=float(info.get("test_fraction", 0.2)),
        num_classes=info.get("num_classes"),
    )
    if spec.alpha <= 0:
        raise ConfigError(path, "data.info.alpha", "must be > 0")
    if spec.num_parties < 1:
        raise ConfigError(path, "data.info.num_parties", "must be >= 1")
    if not 0 <= spec.party_index < spec.num_parties:
        raise ConfigError(path, "data.info.party_index", f"must be in 0..{spec.num_parties - 1}")
    for key in ("validation_fraction", "test_fraction"):
        if not 0 < getattr(spec, key) < 1:
            raise ConfigError(path, f"data.info.{key}", "must be between 0 and 1")
    return spec


def _model_spec(doc: dict[str, Any], path: Path) -> ModelSpec:
    name = _get(doc, "model.name")
    kind_key = "model.spec.kind"
    kind = _get(doc, kind_key)
    if kind is None and name is not None:
        kind_key = "model.name"
        kind = name
    kind = kind or "logistic"
    if kind not in _MODEL_KINDS:
        raise ConfigError(
            path,
            kind_key,
            f"{kind} is not supported by seel.fl (use logistic, mlp or SklearnSGDFLModel)",
        )
    hidden = int(_get(doc, "model.spec.hidden", 32))
    if hidden < 1:
        raise ConfigError(path, "model.spec.hidden", "must be >= 1")
    return ModelSpec(
        kind=_MODEL_KINDS[kind],
        hidden=hidden,
        seed=int(_get(doc, "model.spec.seed", 0)),
        num_classes=_get(doc, "model.spec.num_classes"),
    )


def _endpoint(doc: dict[str, Any], section: str, path: Path, required: bool) -> Endpoint:
    host = _get(doc, f"{section}.ip", DEFAULT_HOST)
    port = _get(doc, f"{section}.port")
    if port is None:
        if required:
            raise ConfigError(path, f"{section}.port", "missing")
        port = 0
    return Endpoint(host, int(port))


def _local_params(local: dict[str, Any], path: Path, prefix: str) -> dict[str, Any]:
    """The local hyperparameters that are set, flattened, checked for range."""
    out: dict[str, Any] = {}
    for section, key, name in (
        ("training", "epochs", "epochs"),
        ("training", "batch_size", "batch_size"),
        ("optimizer", "lr", "lr"),
    ):
        value = (local.get(section) or {}).get(key)
        if value is None:
            continue
        if value <= 0:
            raise ConfigError(path, f"{prefix}.{section}.{key}", "must be > 0")
        out[name] = value
    max_iter = (local.get("training") or {}).get("max_iter")
    if max_iter is not None and "epochs" not in out:
        out["epochs"] = max_iter  # IBM FL's sklearn models call the epoch count max_iter
    return out


def _max_bytes(doc: dict[str, Any], path: Path) -> int:
    mb = float(_get(doc, "transport.max_message_mb", 64))
    if mb <= 0:
        raise ConfigError(path, "transport.max_message_mb", "must be > 0")
    limit = mb * (1 << 20)
    if not math.isfinite(limit):
        raise ConfigError(path, "transport.max_message_mb", f"{mb} is too large")
    return int(limit)


def load_aggregator_config(path: Path) -> AggregatorConfig:
    """Load and check an aggregator config."""
    return aggregator_config_from_doc(load_yaml(path), path)


def aggregator_config_from_doc(doc: dict[str, Any], path: Path) -> AggregatorConfig:
    """Check an aggregator config already read; `path` names it in errors and anchors paths."""
    check_schema(doc, AGGREGATOR_SCHEMA, path)
    _require_name(doc, "fusion", FUSIONS, path)
    _require_name(doc, "connection", _CONNECTIONS, path)
    _require_name(doc, "protocol_handler", _PROTOCOLS, path)
    if _get(doc, "connection.info.port") is None and _get(doc, "aggregator.port") is None:
        raise ConfigError(path, "connection.info.port", "missing")
    section = "connection.info" if _get(doc, "connection.info.port") is not None else "aggregator"
    listen = _endpoint(doc, section, path, required=True)

    g = _get(doc, "hyperparams.global", {})
    rounds = int(g.get("rounds", 1))
    if rounds < 1:
        raise ConfigError(path, "hyperparams.global.rounds", "must be >= 1")
    max_timeout = g.get("max_timeout")
    if max_timeout is not None and (
        isinstance(max_timeout, bool)
        or not isinstance(max_timeout, int | float)
        or not (_finite(max_timeout) or max_timeout == math.inf)  # NaN, or an int beyond floats
        or max_timeout < 0
    ):
        raise ConfigError(
            path, "hyperparams.global.max_timeout", f"expected seconds >= 0, got {max_timeout!r}"
        )
    perc_quorum = float(g.get("perc_quorum", 1.0))
    if not 0 < perc_quorum <= 1:
        raise ConfigError(path, "hyperparams.global.perc_quorum", "must be in (0, 1]")
    num_parties = int(g.get("num_parties", 1))
    if num_parties < 1:
        raise ConfigError(path, "hyperparams.global.num_parties", "must be >= 1")
    target = g.get("termination_accuracy")
    if target is not None and not 0 <= target <= 1:
        raise ConfigError(path, "hyperparams.global.termination_accuracy", "must be in [0, 1]")
    local = LocalParams(
        **_local_params(_get(doc, "hyperparams.local", {}), path, "hyperparams.local")
    )
    data = _data_spec(doc, path) if _get(doc, "data") is not None else None
    if target is not None and data is None:
        raise ConfigError(
            path,
            "hyperparams.global.termination_accuracy",
            "needs a data: section (the validation split)",
        )
    return AggregatorConfig(
        path=path,
        listen=listen,
        fusion=_get(doc, "fusion.name", "IterAvgFusionHandler"),
        rounds=rounds,
        max_timeout_s=float(max_timeout) if max_timeout else None,
        perc_quorum=perc_quorum,
        num_parties=num_parties,
        termination_accuracy=float(target) if target is not None else None,
        local=local,
        data=data,
        model=_model_spec(doc, path),
        max_message_bytes=_max_bytes(doc, path),
    )


def load_party_config(path: Path) -> PartyConfig:
    """Load and check a party config."""
    return party_config_from_doc(load_yaml(path), path)


def party_config_from_doc(doc: dict[str, Any], path: Path) -> PartyConfig:
    """Check a party config already read; `path` names it in errors and anchors paths."""
    check_schema(doc, PARTY_SCHEMA, path)
    _require_name(doc, "connection", _CONNECTIONS, path)
    _require_name(doc, "protocol_handler", _PROTOCOLS, path)
    _require_name(doc, "local_training", _LOCAL_TRAINING, path)
    sim = _get(doc, "simulation", {})
    simulation = Simulation(
        delay_s=float(sim.get("delay_s", 0.0)),
        jitter_s=float(sim.get("jitter_s", 0.0)),
        crash_at_round=sim.get("crash_at_round"),
        hang_at_round=sim.get("hang_at_round"),
        drop_rate=float(sim.get("drop_rate", 0.0)),
        seed=int(sim.get("seed", 0)),
    )
    for key in ("delay_s", "jitter_s"):
        if getattr(simulation, key) < 0:
            raise ConfigError(path, f"simulation.{key}", "must be >= 0")
    if not 0 <= simulation.drop_rate <= 1:
        raise ConfigError(path, "simulation.drop_rate", "must be in [0, 1]")
    return PartyConfig(
        path=path,
        listen=_endpoint(doc, "connection.info", path, required=True),
        aggregator=_endpoint(doc, "aggregator", path, required=True),
        data=_data_spec(doc, path),
        model=_model_spec(doc, path),
        local_overrides=_local_params(
            _get(doc, "hyperparams.local", {}), path, "hyperparams.local"
        ),
        simulation=simulation,
        max_message_bytes=_max_bytes(doc, path),
    )


def validate_docs(
    aggregator: dict[str, Any],
    parties: list[dict[str, Any]],
    aggregator_path: Path,
    party_paths: list[Path],
) -> None:
    """Check a trial's configs as this engine would load them; ConfigError on the first problem."""
    agg = aggregator_config_from_doc(aggregator, aggregator_path)
    for doc, path in zip(parties, party_paths, strict=True):
        party_config_from_doc(doc, path)
    if agg.num_parties > len(parties):
        raise ConfigError(
            aggregator_path,
            "hyperparams.global.num_parties",
            f"{agg.num_parties} parties required but the sweep starts {len(parties)}",
        )
