"""A fake of a deployment whose processes take no commands (shaped like Flower's), for the
engine-schema tests: `link` (a server that starts a helper in a session of its own), `node`,
`submit` (streams round records, then exits) and `status` (prints JSON, then exits).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys

GREEN, BOLD, RESET = "\x1b[92m", "\x1b[1m", "\x1b[0m"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["link", "node", "submit", "status"])
    parser.add_argument("--arg", default="")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--run-id", default="")
    parser.add_argument("--status", default="finished:completed")
    args = parser.parse_args()
    if args.role == "link":
        helper = subprocess.Popen(
            [sys.executable, "-c", "import signal; signal.pause()"], start_new_session=True
        )
        print(f"helper pid {helper.pid}", flush=True)
        print(f"{GREEN}INFO{RESET}: link {BOLD}ready{RESET} on {args.arg}", flush=True)
        signal.pause()
    elif args.role == "node":
        home = os.environ["FAKE_HOME"]
        with open(os.path.join(home, "conf.toml")) as f:
            print(f"node conf {f.read().strip()}", flush=True)
        print(f"node ready with {args.arg}", flush=True)
        print("metrics {'acc': 0.9, 'loss': 0.25}", flush=True)
        signal.pause()
    elif args.role == "submit":
        print(f"run config {args.arg}", flush=True)
        print(f"{GREEN}Successfully started run 4242{RESET}", flush=True)
        for r in range(1, args.rounds + 1):
            print(f"[ROUND {r}/{args.rounds}]", flush=True)
            print(f"Record: {{'loss': {1.0 / r}}}", flush=True)
            print(f"Record: {{'acc': {r / 10}}}", flush=True)
        print("finished", flush=True)
    else:
        print(json.dumps({"runs": [{"id": args.run_id, "status": args.status}]}, indent=2))


if __name__ == "__main__":
    main()
