"""A sweep bound to its engine: checked once, then renders each trial's configs.

Rendering starts from the user's files as the sweep loaded them (ruamel.yaml round-trip, once), so
comments, key order and quoting survive; only the swept keys, the seeds of repeats, the ports and
the relative paths the engine names change. The user's files are never written.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap

from seel import yamledit
from seel.engine import Engine, Validator
from seel.errors import SpecError
from seel.namedfiles import check_named_files
from seel.space import Target, TrialSpec
from seel.sweep import SweepSpec
from seel.trialfiles import check_templates

AGGREGATOR_FILE = "config_agg.yml"
_MODULE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def party_file(index: int) -> str:
    return f"config_party{index}.yml"


class Plan:
    """The sweep, its engine (with the sweep's phase timeouts laid over the engine's) and the base
    configs: what every trial of this sweep is made from."""

    def __init__(self, spec: SweepSpec, engine: Engine) -> None:
        self.spec = spec
        self.engine = engine.with_timeouts(spec.timeouts)
        self.configs = spec.configs

    @property
    def n_parties(self) -> int:
        return self.configs.n_parties

    def config_cwd(self) -> Path:
        return self.configs.aggregator_path.parent

    def named_modules(self) -> list[str]:
        """Modules the configs name at the engine's `preload_keys` (handlers), in order."""
        found: dict[str, None] = {}
        for doc in self.configs.docs():
            for key in self.engine.preload_keys:
                value = yamledit.get_path(doc, key) if yamledit.has_path(doc, key) else None
                if isinstance(value, str) and _MODULE.fullmatch(value):
                    found[value] = None
        return list(found)

    # -- validation -----------------------------------------------------------------------

    def validate(self) -> None:
        """Check the engine's keys exist in the configs and every swept value passes the engine's
        own config checks; SpecError on the first problem. Costs one check per value, not per trial
        (for a range an optimizer samples: its bounds).
        """
        eng = self.engine
        procs = [eng.aggregator] + [eng.party] * self.n_parties
        for path, doc, proc in zip(self.configs.paths(), self.configs.docs(), procs, strict=True):
            for key in (*proc.port_keys, *proc.aggregator_port_keys):
                if not yamledit.has_path(doc, key):
                    raise SpecError(path, key, f"missing: the {eng.name} engine writes a port here")
        check_templates(eng, self.configs.paths(), self.configs.docs())
        check_named_files(self.spec, eng, self.configs.docs(), self.config_cwd())
        check = eng.validator()
        if check is None:
            return
        base_agg = yamledit.to_plain(self.configs.aggregator)
        base_parties = [yamledit.to_plain(d) for d in self.configs.parties]
        for _, target, value in self.spec.fixed:
            self._set(base_agg, base_parties, target, value)
        problem = self._problem(check, base_agg, base_parties)
        if problem is not None and self.spec.parameters:
            # The bare configs never run: every trial sets each parameter. A key they name wrongly
            # that a parameter sets (such as a file path `seel init` points elsewhere) is fine.
            agg, parties = copy.deepcopy(base_agg), copy.deepcopy(base_parties)
            for param in self.spec.parameters:
                self._set(agg, parties, param.target, param.probe_values()[0])
            if self._problem(check, agg, parties) is None:
                problem, base_agg, base_parties = None, agg, parties
        if problem is not None:
            raise problem
        for param in self.spec.parameters:
            for value in param.probe_values():
                agg, parties = copy.deepcopy(base_agg), copy.deepcopy(base_parties)
                self._set(agg, parties, param.target, value)
                problem = self._problem(check, agg, parties)
                if problem is not None:
                    raise SpecError(
                        self.spec.path, f"parameters.{param.name}", f"value {value!r}: {problem}"
                    )

    @staticmethod
    def _set(agg: Any, parties: list[Any], target: Target, value: Any) -> None:
        """Set a target's key in plain or round-trip documents (list indexes included)."""
        if target.process == "aggregator":
            docs = [agg]
        elif target.party_index is None:
            docs = list(parties)
        else:
            docs = [parties[target.party_index]]
        for doc in docs:
            yamledit.set_path(doc, target.path, value)

    def _problem(
        self, check: Validator, agg: dict[str, Any], parties: list[dict[str, Any]]
    ) -> SpecError | None:
        """What the engine's checker says of these configs, as (config file, key, why)."""
        try:
            check(agg, parties, self.configs.aggregator_path, list(self.configs.party_paths))
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
        agg = yamledit.copy_doc(self.configs.aggregator)
        parties = [yamledit.copy_doc(d) for d in self.configs.parties]
        for _, target, value in self.spec.fixed:
            self._set(agg, parties, target, value)
        for param in self.spec.parameters:
            self._set(agg, parties, param.target, trial.params[param.name])
        eng = self.engine
        sources = self.configs.paths()
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
