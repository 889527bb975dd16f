"""Run every benchmark under bench/ and print their figures (`make bench`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["engine.py", "controller.py", "flower.py", "ibmfl.py", "ray.py"]  # ibmfl.py: skipped without IBM FL

if __name__ == "__main__":
    failed = 0
    for name in BENCHES:
        print(f"== bench/{name}", flush=True)
        failed |= subprocess.call([sys.executable, str(HERE / name), *sys.argv[1:]])
    sys.exit(failed)
