"""The `seel` command. Thin: parse options into settings, call the library, map to an exit code."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from seel.engine import load_engine, shipped_engines
from seel.errors import RunDirError, SeelError, SpecError
from seel.events import Sink
from seel.render.plain import PlainSink
from seel.run import RunResult, RunSettings, run_sweep

EXIT_OK, EXIT_INFRA, EXIT_INPUT, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143

app = typer.Typer(
    help="Sweep federated-learning hyperparameters by driving real aggregator and party processes.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int = EXIT_INPUT) -> typer.Exit:
    print(f"seel: {message}", file=sys.stderr)
    return typer.Exit(code)


def _port_range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    low, sep, high = text.partition("-")
    if not sep or not low.isdigit() or not high.isdigit() or not 1024 <= int(low) <= int(high) <= 65535:
        raise _fail(f"--port-range: expected A-B with 1024 <= A <= B <= 65535, got {text!r}")
    return int(low), int(high)


async def _run(settings: RunSettings, sink: Sink) -> tuple[RunResult, int | None]:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(sig: int) -> None:
        if not received:
            print(f"\nseel: {signal.Signals(sig).name}: stopping every trial...", file=sys.stderr, flush=True)
            task.cancel()
        received.append(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    result = await run_sweep(settings, sink)
    return result, received[0] if received else None


@app.command()
def run(
    sweep: Annotated[Path, typer.Argument(help="The sweep file (YAML).")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="KEY=VALUE or KEY=V1,V2 or KEY=range(A,B[,STEP]): change or sweep any key."),
    ] = None,
    parallel: Annotated[int | None, typer.Option("--parallel", "-j", min=1, help="Trials at once.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (resumed if it exists).")] = None,
    port_range: Annotated[str | None, typer.Option(help="Ports to use, e.g. 6000-6999.")] = None,
    retries: Annotated[int, typer.Option(min=0, help="Re-runs of a trial that failed for infrastructure reasons.")] = 2,
    python: Annotated[str | None, typer.Option(help="Python of the engine's environment (for ibmfl).")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Run a sweep, or resume one: a run directory that has results continues where it stopped.

    Examples:

      seel run sweeps/quick.yml

      seel run sweeps/paper-table1.yml hyperparams.global.rounds=2,3 --parallel 2

      seel run sweeps/paper-table1.yml --out runs/table1   # run again to resume
    """
    settings = RunSettings(
        sweep=sweep,
        overrides=tuple(overrides or ()),
        out=out,
        parallel=parallel,
        port_range=_port_range(port_range),
        retries=retries,
        python=python,
    )
    try:
        result, sig = asyncio.run(_run(settings, PlainSink(sys.stdout)))
    except (SpecError, RunDirError) as exc:
        if debug:
            raise
        raise _fail(str(exc)) from None
    except SeelError as exc:
        if debug:
            raise
        raise _fail(str(exc), EXIT_INFRA) from None
    if result.interrupted or sig is not None:
        raise typer.Exit(EXIT_SIGTERM if sig == signal.SIGTERM else EXIT_SIGINT)
    raise typer.Exit(EXIT_INFRA if result.tally.infrastructure_failures else EXIT_OK)


@app.command()
def engines() -> None:
    """List the engines and whether each is usable here."""
    for name in shipped_engines():
        engine = load_engine(name, "seel")
        ok, why = engine.usable()
        print(f"{name:<10} {'usable' if ok else 'not usable'}: {why}  ({engine.description})")


if __name__ == "__main__":
    app()
