"""Run every benchmark in bench/, one after another, each printing its own table.

Each benchmark measures its baseline in the same run and prints ratios; this script only
runs them in turn (with a progress line) and writes each one's JSON results to
bench/results/<name>.json so runs can be compared.

Run: python bench/run_all.py [--only overhead,context_tokens] [--skip local_model]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    "overhead",
    "context_tokens",
    "render_growth",
    "server",
    "scale",
    "local_model",
    "retrieval",
    "parallel",
    "retries",
    "guards",
    "ratelimits",
    "budgets",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated names to run")
    parser.add_argument("--skip", default="", help="comma-separated names to leave out")
    args = parser.parse_args()
    only = [n for n in args.only.split(",") if n]
    skip = {n for n in args.skip.split(",") if n}
    names = [n for n in (only or BENCHES) if n not in skip]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    failed = []
    for i, name in enumerate(names, 1):
        print(f"\n=== [{i}/{len(names)}] bench/{name}.py ===", flush=True)
        started = time.monotonic()
        code = subprocess.call(
            [sys.executable, str(HERE / f"{name}.py"), "--json", str(results / f"{name}.json")]
        )
        print(
            f"=== {name}: {'ok' if code == 0 else f'exit {code}'} in "
            f"{time.monotonic() - started:.0f}s ===",
            flush=True,
        )
        if code:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
