"""`seel ibmfl setup`: build IBM FL's environment from its wheel, with dependencies that install.

IBM FL 2.0.1 is not on PyPI (its wheel is in the public IBM/federated-learning-lib repository) and
its pins (scikit-learn 1.0.2, numpy < 1.24, ...) do not install on Python 3.11. What works: the
wheel without its dependencies, then the packages below from the package index. Werkzeug >= 2.1
breaks IBM FL's STOP (it shuts Flask down through `werkzeug.server.shutdown`); `parse` is imported
by `ibmfl/connection/router_handler.py` but not declared; `gensim` is imported by the MNIST data
handler's module.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from seel.errors import SeelError

WHEEL_NAME = "federated_learning_lib-2.0.1-py3-none-any.whl"
DEPENDENCIES = (
    "numpy",
    "scipy",
    "scikit-learn",
    "pandas",
    "gensim",
    "Flask==2.0.3",
    "Werkzeug==2.0.3",
    "Jinja2",
    "click",
    "requests",
    "jsonpickle",
    "PyYAML",
    "environs",
    "parse",
)
# The modules a sweep starts: importing them proves the environment works.
CHECK_IMPORTS = "import ibmfl.aggregator.aggregator, ibmfl.party.party, sklearn, flask"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def setup_commands(wheel: Path, venv: Path, base_python: str | None = None) -> list[list[str]]:
    """The commands that build the environment at `venv`, in order (the venv made with
    `base_python`, by default `base_interpreter()`)."""
    python = str(venv_python(venv))
    return [
        [base_python or base_interpreter(), "-m", "venv", str(venv)],
        [python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [python, "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
        [python, "-m", "pip", "install", "--quiet", *DEPENDENCIES],
        [python, "-c", CHECK_IMPORTS],
    ]


def check_wheel(wheel: Path) -> None:
    """SeelError unless `wheel` is an IBM FL wheel file."""
    if not wheel.is_file():
        raise SeelError(
            f"{wheel}: no such file (IBM FL's wheel, {WHEEL_NAME}, is in the public "
            "IBM/federated-learning-lib repository, folder federated-learning-lib/)"
        )
    if not (wheel.name.startswith("federated_learning_lib-") and wheel.suffix == ".whl"):
        raise SeelError(f"{wheel}: not an IBM FL wheel (expected {WHEEL_NAME})")


def base_interpreter() -> str:
    """The Python to make the environment with: the one SEEL runs on, outside any venv (or SEEL's
    own, where that one is not found)."""
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    return str(base) if base.exists() else sys.executable


def build(
    wheel: Path,
    venv: Path,
    say: Callable[[str], None],
    run: Callable[[Sequence[str]], int] | None = None,
) -> Path:
    """Run the setup commands (saying each first); returns the environment's Python."""
    check_wheel(wheel)
    runner = run or (lambda argv: subprocess.run(list(argv), check=False).returncode)
    for argv in setup_commands(wheel.resolve(), venv.resolve()):
        say(" ".join(argv))
        code = runner(argv)
        if code != 0:
            raise SeelError(f"{argv[0]} {' '.join(argv[1:3])}: failed with exit code {code}")
    return venv_python(venv.resolve())
