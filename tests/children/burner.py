"""A process whose CPU use is known: burns --cpu seconds of CPU, says so, then idles until a line.

    python tests/children/burner.py --cpu 0.5
"""

from __future__ import annotations

import argparse
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--cpu", type=float, required=True)
    args = p.parse_args()
    start = time.process_time()
    x = 0
    while time.process_time() - start < args.cpu:
        x += 1
    print(f"burned {time.process_time() - start:.3f}", flush=True)
    sys.stdin.readline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
