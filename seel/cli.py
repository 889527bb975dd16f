"""The `seel` command. Thin: parse options into settings, call the library, map to an exit code.

Exit codes: 0 all trials ran (timeouts are results), 1 some trials failed for infrastructure
reasons, the results could not be written (a full disk), or the sweep stopped because its first
trials all failed the same way early (a broken set-up; see seel/failfast.py), 2 bad input, 130 interrupted (143 on
SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from seel.errors import SeelError
from seel.events import Sink, SweepStopping
from seel.plan import Plan
from seel.run import RunnerFactory, RunResult, RunSettings, prepare

EXIT_OK, EXIT_INFRA, EXIT_INPUT, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143

app = typer.Typer(
    help="Sweep federated-learning hyperparameters by driving real aggregator and party processes.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, markup=False, highlight=False, emoji=False)


def _fail(message: str, code: int = EXIT_INPUT) -> typer.Exit:
    print(f"seel: {message}", file=sys.stderr)
    return typer.Exit(code)


@contextlib.contextmanager
def _errors(debug: bool) -> Iterator[None]:
    """Turn SEEL's errors into one line and an exit code (a traceback only with --debug)."""
    from seel.errors import ClusterLost, PortUnavailable, StorageError

    try:
        yield
    except SeelError as exc:
        if debug:
            raise
        infra = isinstance(exc, PortUnavailable | StorageError | ClusterLost)
        raise _fail(str(exc), EXIT_INFRA if infra else EXIT_INPUT) from None


def _port_range(text: str | None) -> tuple[int, int] | None:
    from seel.ports import parse_port_range

    if text is None:
        return None
    try:
        return parse_port_range(text)
    except ValueError as exc:
        raise _fail(f"--port-range: {exc}") from None


def _parallel(text: str | None) -> int | Literal["auto"] | None:
    if text is None:
        return None
    if text == "auto":
        return "auto"
    if not text.isdigit() or int(text) < 1:
        raise _fail(f"--parallel: expected auto or a number >= 1, got {text!r}")
    return int(text)


OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="KEY=VALUE fixes a key; KEY=V1,V2 or KEY=range(A,B[,STEP]) sweeps it.",
        show_default=False,
    ),
]
DebugOpt = Annotated[bool, typer.Option(help="Show tracebacks.")]
MetricOpt = Annotated[
    str,
    typer.Option(
        "--metric", "-m", help="The metric to rank and draw, e.g. acc, loss, 'precision weighted'."
    ),
]


async def _run_async(
    settings: RunSettings,
    plan: Plan,
    sink: Sink,
    ticker: Callable[[], Awaitable[None]] | None = None,
    runner: RunnerFactory | None = None,
) -> tuple[RunResult, int | None]:
    from seel.events import isolated
    from seel.run import local_runner, run_sweep

    sink = isolated(sink)  # the signal handler and the search emit through the guard too
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(sig: int) -> None:
        if not received:
            sink.emit(SweepStopping(signal.Signals(sig).name))
            task.cancel()
        received.append(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    tick = asyncio.ensure_future(ticker()) if ticker is not None else None
    try:
        result = await run_sweep(settings, sink, plan, runner=runner or local_runner)
    finally:
        if tick is not None:
            tick.cancel()
            await asyncio.gather(tick, return_exceptions=True)
    return result, received[0] if received else None


class _StoppingNotice:
    """Tells a person on stderr that Ctrl-C was heard (for the plain and --json outputs)."""

    def emit(self, event: object) -> None:
        if isinstance(event, SweepStopping):
            print(f"seel: {event.signal}: stopping every trial...", file=sys.stderr, flush=True)


@app.command()
def run(
    sweep: Annotated[Path, typer.Argument(help="The sweep file (YAML).", show_default=False)],
    overrides: OverridesArg = None,
    parallel: Annotated[
        str | None,
        typer.Option(
            "--parallel",
            "-j",
            help="Trials at once: a number, or auto (as many as the machine holds without "
            "slowing them) [default: the sweep's parallel:, else auto].",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Run directory; an existing one is resumed [default: runs/NAME-TIME].",
        ),
    ] = None,
    json_events: Annotated[
        bool,
        typer.Option(
            "--json", help="JSON Lines events on stdout, nothing else; human text on stderr."
        ),
    ] = False,
    plain: Annotated[
        bool, typer.Option("--plain", help="One line per finished trial, even on a terminal.")
    ] = False,
    port_range: Annotated[str | None, typer.Option(help="Ports to use, e.g. 6000-6999.")] = None,
    retries: Annotated[
        int,
        typer.Option(min=0, help="Re-runs of a trial that failed for an infrastructure reason."),
    ] = 2,
    python: Annotated[
        str | None, typer.Option(help="Python of the engine's environment (for ibmfl).")
    ] = None,
    keep_going: Annotated[
        bool,
        typer.Option(
            "--keep-going",
            help="Run every trial even when the first ones all fail the same way early.",
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Run the trials on a Ray cluster: auto, HOST:PORT, ray://HOST:PORT, or local "
            "(a Ray instance for this sweep). Needs seel[ray].",
        ),
    ] = None,
    metric: MetricOpt = "acc",
    debug: DebugOpt = False,
) -> None:
    """Run a sweep, or resume one: a run directory that has results continues where it stopped.

    Examples:

      seel run sweeps/quick.yml

      seel run sweeps/paper-table1.yml hyperparams.global.rounds=2,3 --parallel 2

      seel run sweeps/paper-table1.yml --out runs/t1        # again, to resume

      seel run sweeps/quick.yml --json | jq -c 'select(.event == "trial_finished")'

      seel run sweeps/paper-table1.yml --ray auto          # on the Ray cluster of this machine
    """
    from seel.events import FanOut
    from seel.render.plain import PlainSink

    settings = RunSettings(
        sweep=sweep,
        overrides=tuple(overrides or ()),
        out=out,
        parallel=_parallel(parallel),
        port_range=_port_range(port_range),
        retries=retries,
        python=python,
        keep_going=keep_going,
    )
    with _errors(debug), contextlib.ExitStack() as cluster_scope:
        plan = prepare(settings)  # bad input fails here (a search: section too), before any output
        runner: RunnerFactory | None = None
        if ray_address is not None:  # and a cluster that cannot run it, here too
            from seel.ray.cluster import connect

            cluster = connect(ray_address, plan.engine.cpus_per_trial)
            cluster_scope.callback(cluster.close)
            slots = cluster.slots_for(settings, plan)  # auto: what the cluster holds
            settings = replace(settings, parallel=slots)
            cluster.start_slots(plan, slots)  # paid before the sweep, not by its first trials
            runner = cluster.runner
        if json_events:
            from seel.render.jsonl import JsonLinesSink

            result, sig = asyncio.run(
                _run_async(
                    settings,
                    plan,
                    FanOut(JsonLinesSink(sys.stdout, metric), _StoppingNotice()),
                    runner=runner,
                )
            )
        elif sys.stdout.isatty() and not plain:
            from seel.render.live import LiveSink

            with LiveSink(_console(), metric) as live:
                result, sig = asyncio.run(
                    _run_async(settings, plan, live, live.ticker, runner=runner)
                )
            if live.finished is not None:
                PlainSink(sys.stdout, metric).emit(live.finished)
        else:
            result, sig = asyncio.run(
                _run_async(
                    settings,
                    plan,
                    FanOut(PlainSink(sys.stdout, metric), _StoppingNotice()),
                    runner=runner,
                )
            )
    if result.interrupted or sig is not None:
        raise typer.Exit(EXIT_SIGTERM if sig == signal.SIGTERM else EXIT_SIGINT)
    if result.tally.stopped is not None:
        raise _fail(result.tally.stopped, EXIT_INFRA)
    raise typer.Exit(EXIT_INFRA if result.tally.infrastructure_failures else EXIT_OK)


@app.command()
def validate(
    sweep: Annotated[Path, typer.Argument(help="The sweep file (YAML).", show_default=False)],
    overrides: OverridesArg = None,
    show: Annotated[
        int, typer.Option(min=0, help="How many trials' configs to show as diffs.")
    ] = 3,
    debug: DebugOpt = False,
) -> None:
    """Expand and check a sweep; print the trial count and the first trials' configs as diffs
    against the originals. Starts nothing.

    Example:

      seel validate sweeps/paper-table1.yml hyperparams.global.rounds=2,3
    """
    from seel import yamledit
    from seel.grid import trial_at

    with _errors(debug):
        plan = prepare(RunSettings(sweep=sweep, overrides=tuple(overrides or ())))
        spec, engine = plan.spec, plan.engine
        if spec.search is not None:
            from seel.search.factory import search_settings

            search = search_settings(plan)
            assert search is not None
            print(
                f"{spec.path}: a search of {search.trials} trials ({search.sampler}, pruner "
                f"{search.pruner.name}) on engine {engine.name}, all checked"
            )
            for p in spec.parameters:
                print(f"  {p.name}: {json.dumps(p.dist.describe())}")
        else:
            print(f"{spec.path}: {spec.trial_count()} trials on engine {engine.name}, all checked")
            for p in spec.parameters:
                shown = ", ".join(map(repr, p.values[:8])) + (" ..." if len(p.values) > 8 else "")
                print(f"  {p.name}: {len(p.values)} values: {shown}")
        for name, _, value in spec.fixed:
            print(f"  {name} = {value!r} (fixed)")
        if spec.repeats > 1:
            print(f"  repeats: {spec.repeats}")
        # The ports each config names, so that a diff shows none changed; party i of a trial is
        # made from the config plan.config_paths names (and shown against it).
        base_ports = {
            path: int(yamledit.get_path(doc, proc.port_keys[0]))
            for path, doc, proc in zip(
                plan.configs.paths(),
                plan.configs.docs(),
                [engine.aggregator] + [engine.party] * plan.n_parties,
                strict=True,
            )
        }
        for index in range(min(show, spec.trial_count()) if spec.search is None else 0):
            trial = trial_at(spec, index)
            originals = plan.config_paths(plan.parties_of(trial))
            agg, parties = plan.docs_for(trial, [base_ports[p] for p in originals])
            print(f"\n{trial.trial_id}: " + " ".join(f"{k}={v!r}" for k, v in trial.params.items()))
            for position, (original, doc) in enumerate(
                zip(originals, [agg, *parties], strict=True)
            ):
                # a config that several parties are made from: each party's own diff
                reused = position > plan.n_parties
                name = f"{original.name} (party {position - 1})" if reused else original.name
                diff = difflib.unified_diff(
                    original.read_text().splitlines(),
                    yamledit.dump(doc).splitlines(),
                    str(original),
                    f"{trial.trial_id}/{name}",
                    n=0,
                    lineterm="",
                )
                for line in diff:
                    print(f"  {line}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.", show_default=False)],
    metric: Annotated[
        str | None,
        typer.Option(
            "--metric", "-m", help="The metric to show [default: acc; with --json: every metric]."
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="The whole report as one JSON object.")
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """The findings of a run: per parameter, mean ± 95% CI of each metric at each value, effect
    size and whether it is beyond noise; timeout and failure rates by value and by phase; the best
    configurations per party. Parameters that move nothing are flagged.

    Examples:

      seel report runs/t1

      seel report runs/t1 --metric loss

      seel report runs/t1 --json | jq '.flags'
    """
    from seel import jsonio
    from seel.analysis import build_report
    from seel.search import is_search_run

    with _errors(debug):
        search_run = is_search_run(run_dir)
        # A search is not a factorial design: no permutation tests, no per-value rates.
        result = build_report(run_dir, metric, factorial=not search_run)
        if search_run:
            from seel.search.analysis import build_search_report

            search = build_search_report(run_dir)
            if json_out:
                print(jsonio.dumps({**result.to_json(), "search": search.to_json()}))
                return
            from seel.render.search_report import show_search_report

            show_search_report(result, search, _console())
            return
    if json_out:
        print(jsonio.dumps(result.to_json()))
        return
    from seel.render.report import show_report

    shown = metric or ("acc" if "acc" in result.metrics else next(iter(result.metrics), "acc"))
    show_report(result, _console(), shown)


@app.command()
def plot(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.", show_default=False)],
    metric: MetricOpt = "acc",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="The heatmap's PNG; the other pictures are written beside it [default: RUN_DIR/plots/METRIC-heatmap.png].",
        ),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """PNG pictures of a run: the metric over the first two parameters (faceted by the third and by
    party), a marginal-effect plot per parameter with 95% bands, and a map of trials that timed out.

    Example:

      seel plot runs/t1 --metric "precision weighted"
    """
    from seel.plot import plot_run
    from seel.search import is_search_run

    with _errors(debug):
        if is_search_run(run_dir):
            from seel.search.plot import plot_search

            for path in plot_search(run_dir, out.parent if out else None):
                print(path)
            return
        for path in plot_run(run_dir, metric, out):
            print(path)


@app.command()
def engines(
    python: Annotated[
        str | None,
        typer.Option(
            help="Python of the environment to check, for the engines that run in one of their "
            "own (ibmfl)."
        ),
    ] = None,
) -> None:
    """List the engines and whether each is usable here (for ibmfl: can its Python import it?)."""
    from seel.enginefile import load_engine, shipped_engines

    for name in shipped_engines():
        engine = load_engine(name, "seel")
        if python is not None and engine.own_python:
            engine = load_engine(name, "seel", python=python)
        ok, why = engine.usable()
        print(
            f"{name:<10} {'usable' if ok else 'not usable'}: {why}   [{engine.python}] {engine.description}"
        )
        if not ok and engine.python_hint:
            print(f"{'':<10} {engine.python_hint}")


ibmfl_app = typer.Typer(
    help="Set up the real IBM FL: its environment, and the files its configs name.",
    no_args_is_help=True,
)
app.add_typer(ibmfl_app, name="ibmfl")


@ibmfl_app.command("setup")
def ibmfl_setup(
    wheel: Annotated[
        Path,
        typer.Option(
            help="IBM FL's wheel (federated_learning_lib-2.0.1-py3-none-any.whl).",
            show_default=False,
        ),
    ],
    venv: Annotated[Path, typer.Option(help="Where to make the environment.")] = Path("ibmfl-venv"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the commands, run nothing.")
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """Build IBM FL's environment from its wheel with dependencies that install on this Python.

    Example:

      seel ibmfl setup --wheel ~/Downloads/federated_learning_lib-2.0.1-py3-none-any.whl
    """
    from seel.ibmfl.environment import build, check_wheel, setup_commands

    with _errors(debug):
        if dry_run:
            check_wheel(wheel)
            for argv in setup_commands(wheel.resolve(), venv.resolve()):
                print(" ".join(argv))
            return
        python = build(wheel, venv, lambda line: print(f"+ {line}", file=sys.stderr, flush=True))
    print(f"IBM FL is ready: export SEEL_IBMFL_PYTHON={python}")


@ibmfl_app.command("data")
def ibmfl_data(
    config_dir: Annotated[
        Path, typer.Argument(help="IBM FL's config directory whose files to write.")
    ] = Path("sweeps/configs/ibmfl"),
    python: Annotated[
        str | None,
        typer.Option(help="IBM FL's Python [default: $SEEL_IBMFL_PYTHON]."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the shuffle and the model.")] = 0,
    debug: DebugOpt = False,
) -> None:
    """Write the data (.npz) and model (pickle) files an IBM FL sklearn config directory names:
    scikit-learn's digits, split between the aggregator and the parties, and an SGD model, written
    by IBM FL's own Python so the pickle matches its scikit-learn.

    Example:

      seel ibmfl data sweeps/configs/ibmfl --python ibmfl-venv/bin/python
    """
    from seel.enginefile import load_engine
    from seel.ibmfl.files import write_files

    with _errors(debug):
        engine = load_engine("ibmfl", "seel", python=python)
        files = write_files(engine.python, config_dir, seed)
    for path in files.all():
        print(path)


@app.command()
def init(
    config_dir: Annotated[
        Path,
        typer.Argument(
            help="A directory with config_agg.yml and config_party*.yml; for --engine flower, "
            "a Flower app (a directory with its pyproject.toml).",
            show_default=False,
        ),
    ],
    engine: Annotated[str, typer.Option(help="builtin, ibmfl or flower.")] = "builtin",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="The sweep file to write [default: NAME-sweep.yml]."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
    root: Annotated[
        Path | None,
        typer.Option(
            help="The folder the configs' relative file paths start from (IBM FL's examples: its "
            "repository) [default: found above CONFIG_DIR].",
        ),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Write a starter sweep file from an existing config directory, listing every numeric
    hyperparameter as a commented-out candidate with its current value.

    Example:

      seel init ~/ibmfl/examples/configs/iter_avg/sklearn --engine ibmfl

      seel init ./my-flower-app --engine flower     # also writes its SuperLink/SuperNode configs
    """
    from seel.enginefile import shipped_engines
    from seel.flowerstart import flower_starter
    from seel.starter import starter_sweep

    if engine not in shipped_engines():
        raise _fail(f"--engine: expected one of {', '.join(shipped_engines())}, got {engine!r}")
    target = out or Path(f"{config_dir.resolve().name}-sweep.yml")
    files: dict[Path, str] = {}
    with _errors(debug):
        if engine == "flower":
            text, files = flower_starter(config_dir, target)
        else:
            text = starter_sweep(config_dir, engine, target, root)
    for path in [target, *files]:
        if path.exists() and not force:
            raise _fail(f"{path}: exists (use --force to overwrite)")
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    target.write_text(text)
    also = f" (and its configs in {next(iter(files)).parent})" if files else ""
    print(f"wrote {target}{also}: uncomment the parameters to sweep, then: seel validate {target}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
