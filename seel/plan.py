"""A sweep bound to its engine: validated once, then renders each trial's configs.

Rendering starts from the user's files loaded once with ruamel.yaml round-trip, so comments, key
order and quoting survive; only the swept keys, the seeds of repeats, the ports and the relative
paths the engine names change. The user's files are never written.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap

from seel import yamledit
from seel.engine import Engine, ProcessDef, Validator
from seel.errors import SpecError
from seel.sweep import SweepSpec, Target, TrialSpec

AGGREGATOR_FILE = "config_agg.yml"


def party_file(index: int) -> str:
    return f"config_party{index}.yml"


def _set_plain(doc: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = doc
    for part in parents:
        node = node[part]
    node[leaf] = value


class Plan:
    """Base configs, engine and sweep: what every trial of this sweep is made from."""

    def __init__(self, spec: SweepSpec, engine: Engine) -> None:
        self.spec = spec
        self.engine = engine
        self.aggregator_base = yamledit.load_roundtrip(spec.aggregator_config)
        self.party_bases = [yamledit.load_roundtrip(p) for p in spec.party_configs]

    @property
    def n_parties(self) -> int:
        return len(self.party_bases)

    def config_cwd(self) -> Path:
        return self.spec.aggregator_config.parent

    # -- validation -----------------------------------------------------------------------

    def validate(self) -> None:
        """Check the engine's keys exist in the configs and every swept value passes the engine's
        own config checks; SpecError on the first problem. Costs one check per value, not per trial.
        """
        for path, doc, proc in self._docs_with_defs():
            for key in (*proc.port_keys, *proc.aggregator_port_keys):
                if not yamledit.has_path(doc, key):
                    raise SpecError(
                        path, key, f"missing: the {self.engine.name} engine writes a port here"
                    )
        check = self.engine.validator()
        if check is None:
            return
        base_agg = yamledit.to_plain(self.aggregator_base)
        base_parties = [yamledit.to_plain(d) for d in self.party_bases]
        for _, target, value in self.spec.fixed:
            self._apply_plain(base_agg, base_parties, target, value)
        problem = self._problem(check, base_agg, base_parties)
        if problem is not None:
            raise problem
        for param in self.spec.parameters:
            for value in param.values:
                agg, parties = copy.deepcopy(base_agg), copy.deepcopy(base_parties)
                self._apply_plain(agg, parties, param.target, value)
                problem = self._problem(check, agg, parties)
                if problem is not None:
                    raise SpecError(
                        self.spec.path, f"parameters.{param.name}", f"value {value!r}: {problem}"
                    )

    def _docs_with_defs(self) -> list[tuple[Path, CommentedMap, ProcessDef]]:
        out = [(self.spec.aggregator_config, self.aggregator_base, self.engine.aggregator)]
        out += [
            (p, d, self.engine.party)
            for p, d in zip(self.spec.party_configs, self.party_bases, strict=True)
        ]
        return out

    def _apply_plain(
        self, agg: dict[str, Any], parties: list[dict[str, Any]], target: Target, value: Any
    ) -> None:
        for doc in self._targets(agg, parties, target):
            _set_plain(doc, target.path, value)

    @staticmethod
    def _targets(agg: Any, parties: list[Any], target: Target) -> list[Any]:
        if target.process == "aggregator":
            return [agg]
        if target.party_index is None:
            return list(parties)
        return [parties[target.party_index]]

    def _problem(
        self, check: Validator, agg: dict[str, Any], parties: list[dict[str, Any]]
    ) -> SpecError | None:
        """What the engine's checker says of these configs, as (config file, key, why)."""
        try:
            check(agg, parties, self.spec.aggregator_config, list(self.spec.party_configs))
        except Exception as exc:
            why = getattr(exc, "why", None)
            if why is None:
                raise
            return SpecError(
                getattr(exc, "path", self.spec.path), str(getattr(exc, "key", "") or ""), str(why)
            )
        return None

    # -- rendering ------------------------------------------------------------------------

    def docs_for(
        self, trial: TrialSpec, ports: list[int]
    ) -> tuple[CommentedMap, list[CommentedMap]]:
        """The trial's configs: the user's, with swept values, repeat seeds, ports and paths set."""
        agg = yamledit.copy_doc(self.aggregator_base)
        parties = [yamledit.copy_doc(d) for d in self.party_bases]
        for _, target, value in self.spec.fixed:
            for doc in self._targets(agg, parties, target):
                yamledit.set_path(doc, target.path, value)
        for param in self.spec.parameters:
            for doc in self._targets(agg, parties, param.target):
                yamledit.set_path(doc, param.target.path, trial.params[param.name])
        eng = self.engine
        sources = [self.spec.aggregator_config, *self.spec.party_configs]
        for i, (doc, proc) in enumerate(
            [(agg, eng.aggregator), *[(p, eng.party) for p in parties]]
        ):
            if trial.repeat:
                for key in proc.seed_keys:
                    if yamledit.has_path(doc, key) and isinstance(yamledit.get_path(doc, key), int):
                        yamledit.set_path(doc, key, yamledit.get_path(doc, key) + trial.repeat)
            for key in proc.path_keys:
                if yamledit.has_path(doc, key):
                    value = yamledit.get_path(doc, key)
                    if isinstance(value, str) and not Path(value).is_absolute():
                        yamledit.set_path(doc, key, str((sources[i].parent / value).resolve()))
            for key in proc.port_keys:
                yamledit.set_path(doc, key, ports[i])
            for key in proc.aggregator_port_keys:
                yamledit.set_path(doc, key, ports[0])
        return agg, parties

    def write_configs(
        self, trial: TrialSpec, ports: list[int], trial_dir: Path
    ) -> tuple[Path, list[Path]]:
        """Write the trial's configs into its directory; returns their paths."""
        agg, parties = self.docs_for(trial, ports)
        agg_path = trial_dir / AGGREGATOR_FILE
        agg_path.write_text(yamledit.dump(agg), encoding="utf-8")
        party_paths = []
        for i, doc in enumerate(parties):
            path = trial_dir / party_file(i)
            path.write_text(yamledit.dump(doc), encoding="utf-8")
            party_paths.append(path)
        return agg_path, party_paths
