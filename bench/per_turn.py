"""The command line of the per-turn benchmarks (bench/retries.py, bench/guards.py): rounds
and loops in, one line per store and row out (µs per turn, ratio to the baseline row), and
the figures as JSON on request."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Run = Callable[[int, int], dict[str, Any]]
"""`run(rounds, loops) -> {store: {row: {"us": ..., "ratio": ...}}}`."""


def main(doc: str, run: Run) -> None:
    """Parse the arguments, run, print and (with --json) write the figures."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--loops", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = run(args.rounds, args.loops)
    for kind, rows in results.items():
        for name, figures in rows.items():
            print(f"{kind:7} {name:9} {figures['us']:9.1f} µs/turn  x{figures['ratio']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
