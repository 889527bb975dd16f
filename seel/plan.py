"""A sweep bound to its engine: checked once, then renders each trial's configs.

Rendering starts from the user's files as the sweep loaded them (ruamel.yaml round-trip, once), so
comments, key order and quoting survive; only the swept keys, the seeds of repeats, the ports and
the relative paths the engine names change. The user's files are never written.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap

from seel import yamledit
from seel.engine import Engine, Validator
from seel.errors import SpecError
from seel.grammar import COMMAND_LINE
from seel.namedfiles import check_named_files
from seel.partycount import COUNT_PARAMETER, COUNT_TARGET
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
        self.count = spec.party_count

    @property
    def n_parties(self) -> int:
        """The number of party configs the sweep lists (see `parties_of` for a trial's parties)."""
        return self.configs.n_parties

    def parties_of(self, trial: TrialSpec) -> int:
        """The number of party processes of a trial (`parties.count`, else one per config)."""
        return self.count.of_trial(trial.params)

    def config_paths(self, n_parties: int) -> list[Path]:
        """The config each process of a trial with `n_parties` parties is made from, aggregator
        first."""
        paths = self.configs.party_paths
        return [
            self.configs.aggregator_path,
            *(paths[self.count.config_of(i)] for i in range(n_parties)),
        ]

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
        (for a range an optimizer samples: its bounds), at the smallest and the largest number of
        parties a trial can have.
        """
        eng = self.engine
        procs = [eng.aggregator] + [eng.party] * self.n_parties
        for path, doc, proc in zip(self.configs.paths(), self.configs.docs(), procs, strict=True):
            for key in (*proc.port_keys, *proc.aggregator_port_keys):
                if not yamledit.has_path(doc, key):
                    raise SpecError(path, key, f"missing: the {eng.name} engine writes a port here")
            if self.count.swept and proc is eng.party:  # how a party learns its place: needed
                written = [(k, "the number of parties") for k in proc.count_keys]
                written += [(k, "the party's index") for k in proc.index_keys]
                for key, what in written:
                    if not yamledit.has_path(doc, key):
                        raise SpecError(
                            path,
                            key,
                            f"missing: the {eng.name} engine writes {what} here"
                            f" ({COUNT_PARAMETER})",
                        )
        check_templates(eng, self.configs.paths(), self.configs.docs())
        check_named_files(self.spec, eng, self.configs.docs(), self.config_cwd())
        self._check_unique()
        check = eng.validator()
        if check is None:
            return
        for n_parties in self.count.checked_counts():
            self._validate_at(check, n_parties)

    def _validate_at(self, check: Validator, n_parties: int) -> None:
        """The engine's checks of every swept value, for trials of `n_parties` parties."""
        base_agg, base_parties = self._plain_docs(n_parties)
        problem = self._problem(check, base_agg, base_parties)
        parameters = [p for p in self.spec.parameters if p.target != COUNT_TARGET]
        if problem is not None and parameters:
            # The bare configs never run: every trial sets each parameter. A key they name wrongly
            # that a parameter sets (such as a file path `seel init` points elsewhere) is fine.
            agg, parties = copy.deepcopy(base_agg), copy.deepcopy(base_parties)
            for param in parameters:
                self._set(agg, parties, param.target, param.probe_values()[0])
            if self._problem(check, agg, parties) is None:
                problem, base_agg, base_parties = None, agg, parties
        if problem is not None:
            raise self._at_count(problem, n_parties)
        for param in parameters:
            for value in param.probe_values():
                agg, parties = copy.deepcopy(base_agg), copy.deepcopy(base_parties)
                self._set(agg, parties, param.target, value)
                problem = self._problem(check, agg, parties)
                if problem is not None:
                    raise SpecError(
                        self.spec.path,
                        f"parameters.{param.name}",
                        f"value {value!r}: {self._at_count(problem, n_parties).why}",
                    )

    def _at_count(self, problem: SpecError, n_parties: int) -> SpecError:
        """A problem found at one number of parties, saying so when the sweep sets it."""
        if not self.count.swept:
            return problem
        why = f"with {n_parties} parties ({COUNT_PARAMETER}): {problem.why}"
        return SpecError(problem.file, problem.key, why)

    def _plain_docs(self, n_parties: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Plain copies of the configs of a trial with `n_parties` parties, with the fixed
        overrides set (no parameter yet)."""
        agg, parties = self._layout(
            yamledit.to_plain(self.configs.aggregator),
            [yamledit.to_plain(d) for d in self.configs.parties],
            n_parties,
            copy.deepcopy,
        )
        for _, target, value in self.spec.fixed:
            self._set(agg, parties, target, value)
        return agg, parties

    def _check_unique(self) -> None:
        """No two parties made from one config share a value the engine wants unique per party
        (`unique_keys`, such as a party's own data file), at the largest count."""
        keys = self.engine.party.unique_keys
        n_parties = self.count.largest
        if not keys or n_parties <= self.n_parties:
            return
        agg, parties = self._plain_docs(n_parties)
        for param in self.spec.parameters:
            self._set(agg, parties, param.target, param.probe_values()[0])
        for key in keys:
            first: dict[tuple[int, str], int] = {}
            for i, doc in enumerate(parties):
                if not yamledit.has_path(doc, key):
                    continue
                value = yamledit.get_path(doc, key)
                seen = first.setdefault((self.count.config_of(i), repr(value)), i)
                if seen == i:
                    continue
                fixed = any(t == COUNT_TARGET for _, t, _ in self.spec.fixed)
                file, where = (
                    (COMMAND_LINE, COUNT_PARAMETER)
                    if fixed
                    else (self.spec.path, f"parameters.{COUNT_PARAMETER}")
                )
                raise SpecError(
                    file,
                    where,
                    f"{n_parties} parties, but {self.n_parties} party configs: parties {seen} and"
                    f" {i} would share {key} = {value!r}, and each {self.engine.name} party needs"
                    f" its own; list a config per party, or set party[{i}].{key}",
                )

    def _layout(
        self, agg: Any, configs: Sequence[Any], n_parties: int, copy_doc: Callable[[Any], Any]
    ) -> tuple[Any, list[Any]]:
        """Copies of the aggregator's config and of the config each of `n_parties` parties is
        made from, with the engine's index and count keys set when the sweep sets the count."""
        agg = copy_doc(agg)
        parties = [copy_doc(configs[self.count.config_of(i)]) for i in range(n_parties)]
        if self.count.swept:
            for key in self.engine.aggregator.count_keys:  # where the aggregator's config has it
                if yamledit.has_path(agg, key):
                    yamledit.set_path(agg, key, n_parties)
            for index, doc in enumerate(parties):
                for key in self.engine.party.index_keys:
                    yamledit.set_path(doc, key, index)
                for key in self.engine.party.count_keys:
                    yamledit.set_path(doc, key, n_parties)
        return agg, parties

    @staticmethod
    def _set(agg: Any, parties: list[Any], target: Target, value: Any) -> None:
        """Set a target's key in plain or round-trip documents (list indexes included)."""
        if target.process == "trial":
            return  # the number of parties is the documents' count, not a key in them
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
            check(agg, parties, self.configs.aggregator_path, self.config_paths(len(parties))[1:])
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
        """The trial's configs: the user's, with swept values, repeat seeds, ports and paths set,
        and the number of parties and their indexes where the engine says (`ports`: the
        aggregator's, then one per party)."""
        n_parties = self.parties_of(trial)
        agg, parties = self._layout(
            self.configs.aggregator, self.configs.parties, n_parties, yamledit.copy_doc
        )
        for _, target, value in self.spec.fixed:
            self._set(agg, parties, target, value)
        for param in self.spec.parameters:
            self._set(agg, parties, param.target, trial.params[param.name])
        eng = self.engine
        sources = self.config_paths(n_parties)
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
