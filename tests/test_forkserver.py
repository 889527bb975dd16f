"""The fork server: a forked child must look to itself and to the controller like a cold start."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import polars as pl
import pytest

from seel.child import Child
from seel.events import Event, TrialFinished
from seel.forkserver import ForkServer
from seel.run import RunSettings, run_sweep
from tests.reliability.kit import assert_run_clean, pid_alive
from tests.test_trial_fake import ListSink

ROOT = Path(__file__).resolve().parent.parent
PROBE = "tests.children.probe"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ForkServer]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "PROBE": "hello"}
    fs = ForkServer(sys.executable, [PROBE], env, tmp_path / "forkserver.log")
    assert await fs.start(), fs.broken
    yield fs
    await fs.aclose()


async def probe(fs: ForkServer, tmp_path: Path, *args: str) -> tuple[Child, dict[str, object]]:
    child = await Child.start(
        "probe",
        [fs.python, "-m", PROBE, *args],
        cwd=tmp_path,
        env=fs.env,
        forkserver=fs,
        transcript=tmp_path / "probe.log",
    )
    line = await child.expect("probe {", 10)
    return child, json.loads(line.text.removeprefix("probe "))


async def test_forked_child_has_its_own_session_terminal_cwd_argv_and_env(
    server: ForkServer, tmp_path: Path
) -> None:
    child, seen = await probe(server, tmp_path, "two words", "x")
    assert seen["pid"] == child.pid
    assert seen["pgid"] == seen["sid"] == child.pid == child.pgid
    assert str(seen["tty"]).startswith("/dev/pts/") and seen["stdout_tty"] is True
    assert seen["cwd"] == str(tmp_path)
    assert seen["argv"] == ["two words", "x"]
    assert seen["name"] == "__main__"
    assert seen["env"] == "hello"
    child.send_line("echo over the pty")
    await child.expect("over the pty", 5)
    child.send_line("exit 0")
    assert await child.wait_exit(5) and child.exit_code == 0
    child.close()
    transcript = (tmp_path / "probe.log").read_text()
    assert "# seel: forked pid" in transcript and "RuntimeWarning" not in transcript


@pytest.mark.parametrize(
    ("command", "code", "printed"),
    [("exit 3", 3, None), ("raise", 1, "RuntimeError: probe was told to raise")],
)
async def test_exit_codes_are_those_of_a_cold_start(
    server: ForkServer, tmp_path: Path, command: str, code: int, printed: str | None
) -> None:
    child, _ = await probe(server, tmp_path)
    child.send_line(command)
    assert await child.wait_exit(5)
    assert child.exit_code == code
    if printed:
        assert any(printed in line for line in child.tail())
    child.close()


async def test_ladder_reaches_sigkill_and_takes_the_group_down(
    server: ForkServer, tmp_path: Path
) -> None:
    child, _ = await probe(server, tmp_path)
    child.send_line("spawn")
    grandchild = int((await child.expect("grandchild ", 5)).text.split()[1])
    child.send_line("ignore-term")
    await child.expect("ignoring SIGTERM", 5)
    assert await child.stop(None, 0.1, 0.3) == -signal.SIGKILL
    child.close()
    assert not pid_alive(child.pid) and not pid_alive(grandchild)
    log = (tmp_path / "probe.log").read_text()
    assert "sending SIGTERM" in log and "sending SIGKILL" in log


async def test_server_that_cannot_preload_says_why(tmp_path: Path) -> None:
    fs = ForkServer(
        sys.executable, ["no_such_module_for_seel"], dict(os.environ), tmp_path / "fs.log"
    )
    assert not await fs.start()
    assert fs.broken is not None and "no_such_module_for_seel" in fs.broken
    assert fs.pid is not None and not pid_alive(fs.pid)


async def test_server_runs_by_path_and_imports_nothing_of_seel(
    server: ForkServer, tmp_path: Path
) -> None:
    # It runs in the engine's own Python (IBM FL's), where SEEL is not installed.
    child, seen = await probe(server, tmp_path)
    assert seen["seel_modules"] == []
    child.send_line("exit 0")
    assert await child.wait_exit(5)
    child.close()


async def test_optional_modules_that_do_not_import_are_passed_over(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "fs.log"
    fs = ForkServer(sys.executable, [PROBE], env, log, optional=["no_such_handler_for_seel", "json"])
    try:
        assert await fs.start(), fs.broken
        child, _ = await probe(fs, tmp_path)
        child.send_line("exit 0")
        assert await child.wait_exit(5)
        child.close()
    finally:
        await fs.aclose()
    assert "not preloaded: no_such_handler_for_seel" in log.read_text()


async def test_server_whose_preloading_starts_a_thread_is_not_used(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    fs = ForkServer(sys.executable, ["tests.children.threaded"], env, tmp_path / "fs.log")
    assert not await fs.start()
    assert fs.broken is not None and "started 1 thread(s)" in fs.broken
    assert fs.pid is not None and not pid_alive(fs.pid)
    assert "forking would not be safe" in (tmp_path / "fs.log").read_text()  # said in its log


async def test_closing_the_controller_end_ends_the_server(tmp_path: Path) -> None:
    fs = ForkServer(
        sys.executable, [PROBE], {**os.environ, "PYTHONPATH": str(ROOT)}, tmp_path / "fs.log"
    )
    assert await fs.start()
    assert fs.pid is not None and pid_alive(fs.pid)
    await fs.aclose()
    assert not pid_alive(fs.pid)


@pytest.mark.slow
async def test_forked_and_cold_trials_give_the_same_results(tmp_path: Path) -> None:
    """The built-in engine preloads; the same sweep with preload off must match it exactly."""
    results = {}
    for mode, preload in (("forked", None), ("cold", [])):
        folder = tmp_path / mode
        folder.mkdir()
        engine = (
            {"extends": "builtin"}
            if preload is None
            else {"extends": "builtin", "preload": preload}
        )
        sweep = {
            "name": f"quick-{mode}",
            "engine": engine,
            "configs": {
                "aggregator": str(ROOT / "sweeps/configs/builtin/config_agg.yml"),
                "parties": [
                    str(ROOT / f"sweeps/configs/builtin/config_party{i}.yml") for i in (0, 1)
                ],
            },
            "parameters": {"hyperparams.global.rounds": {"values": [1, 3]}},
        }
        (folder / "sweep.yml").write_text(json.dumps(sweep))
        settings = RunSettings(
            sweep=folder / "sweep.yml", out=folder / "run", ports_dir=tmp_path / "ports"
        )
        await run_sweep(settings, ListSink())
        log = (folder / "run" / "trials" / "t00000" / "party0.log").read_text()
        assert ("# seel: forked pid" in log) == (mode == "forked")
        results[mode] = pl.read_parquet(folder / "run" / "results.parquet").sort(
            "trial_id", "party"
        )
    for column in ("status", "rounds_completed", "final_global_acc", "acc", "loss", "f1 macro"):
        assert results["forked"][column].to_list() == results["cold"][column].to_list(), column
    assert set(results["forked"]["status"]) == {"ok"}


class KillServerAfterFirstTrial(ListSink):
    """Kills the sweep's fork server when the first trial has finished."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.killed: int | None = None

    def emit(self, event: Event) -> None:
        super().emit(event)
        if isinstance(event, TrialFinished) and self.killed is None:
            docs = [
                json.loads(line) for line in (self.run_dir / "procs.jsonl").read_text().splitlines()
            ]
            self.killed = next(d["pid"] for d in docs if d.get("name") == "forkserver")
            os.kill(self.killed, signal.SIGKILL)


@pytest.mark.slow
async def test_sweep_goes_on_with_cold_starts_when_the_fork_server_dies(tmp_path: Path) -> None:
    sweep = {
        "name": "server-dies",
        "engine": "builtin",
        "configs": {
            "aggregator": str(ROOT / "sweeps/configs/builtin/config_agg.yml"),
            "parties": [str(ROOT / f"sweeps/configs/builtin/config_party{i}.yml") for i in (0, 1)],
        },
        "parameters": {"hyperparams.global.rounds": {"values": [1, 2, 3, 4]}},
        "parallel": 1,
    }
    (tmp_path / "sweep.yml").write_text(json.dumps(sweep))
    run_dir = tmp_path / "run"
    sink = KillServerAfterFirstTrial(run_dir)
    await run_sweep(
        RunSettings(sweep=tmp_path / "sweep.yml", out=run_dir, ports_dir=tmp_path / "p"), sink
    )
    assert sink.killed is not None and not pid_alive(sink.killed)
    assert [e.outcome.status for e in sink.of(TrialFinished)] == ["ok"] * 4
    starts = [
        (run_dir / "trials" / f"t{i:05d}" / "aggregator.log").read_text().split()[3]
        for i in range(4)
    ]
    assert starts[0] == "forked" and starts[1:] == ["spawned"] * 3
    assert_run_clean(run_dir)
