"""`seel init APP_DIR --engine flower`: a starter sweep for a Flower app.

A Flower app has no SEEL configs, so they are written too: the SuperLink's (which app to run, and
the run config passed with `flwr run --run-config`: the app's own `[tool.flwr.app.config]`, with
its values) and one per SuperNode (its `--node-config`). Every key of the app's config is listed
in the sweep as a commented-out candidate `run_config.KEY`.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from seel import yamledit
from seel.enginefile import load_engine
from seel.errors import SpecError
from seel.starter import timeouts_comment

SUPERNODES = 2  # SuperNodes of a starter deployment


def app_config(app_dir: Path) -> dict[str, Any]:
    """The `[tool.flwr.app.config]` table of a Flower app; SpecError if it is not one."""
    pyproject = app_dir / "pyproject.toml"
    if not app_dir.is_dir():
        raise SpecError(app_dir, "", "not a directory")
    try:
        doc = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except OSError:
        raise SpecError(app_dir, "pyproject.toml", "missing: expected a Flower app") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(pyproject, "", f"not TOML: {exc}") from None
    app = doc.get("tool", {}).get("flwr", {}).get("app")
    if not isinstance(app, dict):
        raise SpecError(pyproject, "tool.flwr.app", "missing: not a Flower app")
    config = app.get("config", {})
    if not isinstance(config, dict):
        raise SpecError(pyproject, "tool.flwr.app.config", "not a table")
    return config


def _superlink(app: str, config: dict[str, Any]) -> str:
    body = yamledit.dump({"run_config": config}) if config else "run_config: {}\n"
    return (
        "# The SuperLink of a Flower deployment, and the run SEEL submits to it.\n"
        "superlink:\n"
        "  port: 9093                  # written by SEEL for each trial\n"
        f"app: {app}\n"
        "# Passed as `flwr run --run-config`: sweep these as run_config.KEY. The app's\n"
        "# [tool.flwr.app.config], as `seel init` found it; a key left out keeps the app's value.\n"
        + body
        + "# Written into a copy of the app's pyproject.toml (comments kept): sweep as "
        "app_config.KEY.\napp_config: {}\n"
    )


def _supernode(index: int, count: int) -> str:
    return (
        f"# SuperNode {index} of the deployment.\n"
        "supernode:\n"
        "  port: 9094                  # written by SEEL for each trial\n"
        "  superlink_port: 9093        # written by SEEL: the SuperLink's port\n"
        f"node_config:                  # passed as --node-config (party[{index}].node_config.KEY)\n"
        f"  partition-id: {index}\n"
        f"  num-partitions: {count}\n"
        "fault:\n"
        f"  kill_at_round: 0            # r > 0: SEEL kills this SuperNode when round r starts\n"
    )


def flower_starter(app_dir: Path, out: Path) -> tuple[str, dict[Path, str]]:
    """The text of a starter sweep that will live at `out`, and the config files it names."""
    config = app_config(app_dir)
    engine = load_engine("flower", "seel")
    name = app_dir.resolve().name
    folder = out.resolve().parent / f"{name}-configs"
    app = app_dir.resolve()
    near = os.path.commonpath([app, folder]) != os.path.sep  # else an absolute path reads better
    files = {
        folder / "superlink.yml": _superlink(
            str(os.path.relpath(app, folder)) if near else str(app), config
        ),
        **{folder / f"supernode{i}.yml": _supernode(i, SUPERNODES) for i in range(SUPERNODES)},
    }
    rel = Path(os.path.relpath(folder, out.resolve().parent))
    candidates = [
        f"  # run_config.{key}: {{values: [{value!r}]}}"
        for key, value in config.items()
        if isinstance(value, int | float | str) and not isinstance(value, bool)
    ]
    lines = [
        f"# A starter sweep for the Flower app {app_dir}, written by `seel init`.",
        "# Each trial is a real deployment on loopback: a SuperLink, a SuperNode per party config,",
        "# and `flwr run` of the app. SEEL reads each SuperNode's evaluation from one line its",
        "# ClientApp prints, `metrics {'acc': 0.9, ...}` (sweeps/flower-app/digitsfl/client_app.py",
        "# shows how), and the rounds from the ServerApp's log.",
        "# Uncomment the parameters to sweep and give them values:",
        "#   {values: [1, 2]}, {min: 0, max: 200, step: 50} or",
        "#   {random: uniform, low: 0.01, high: 1, count: 5, seed: 0}",
        f"name: {name}",
        "engine: flower",
        "configs:",
        f"  aggregator: {rel / 'superlink.yml'}",
        "  parties:",
        *(f"    - {rel / f'supernode{i}.yml'}" for i in range(SUPERNODES)),
        "parameters:",
        "  # the app's [tool.flwr.app.config]",
        *candidates,
        "  # a SuperNode lost when a round starts (a fault to sweep)",
        "  # party[0].fault.kill_at_round: {values: [0, 2]}",
        "  # the number of SuperNodes (SuperNode i gets partition-id i of num-partitions N)",
        "  # parties.count: {values: [2, 3]}",
        "repeats: 1",
        "parallel: 1                    # a deployment takes ~1.5 GB and most of 2 cores at peak",
        timeouts_comment(engine),
        "",
    ]
    return "\n".join(lines), files
