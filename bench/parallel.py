"""Parallel tool calls: one answer with N slow read-only calls, run together vs one by one.

The model (instant, scripted) answers once with N calls of a read-only tool that waits
DELAY seconds (an I/O-bound lookup), then finishes. A figure is the wall time of the whole
thread, median over rounds; the baseline is the same thread with `max_parallel_tools=1`
(how every call ran before issue 13), measured in the same run, interleaved. Also the same
answer with all calls on one resource key (`resource_keys`), which must run one by one.

Run: python bench/parallel.py [--calls 4] [--delay 0.2] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from threadline import Agent, MemoryStore, Runtime, Status, tool
from threadline.testing import ScriptedModel, intent


def _agent(calls: int, delay: float, **options: Any) -> Agent:
    @tool
    async def lookup(key: str) -> str:
        """Read-only lookup of a key (waits like a network call)."""
        await asyncio.sleep(delay)
        return key.upper()

    answers = [
        [intent("lookup", key=f"k{i}") for i in range(calls)],
        intent("done_for_now", message="ok"),
    ]
    return Agent("bench", tools=[lookup], model=ScriptedModel(answers), **options)


async def _thread_seconds(agent: Agent) -> float:
    rt = Runtime(MemoryStore(), agents=[agent])
    started = time.perf_counter()
    thread = await rt.launch(agent, "look them up")
    elapsed = time.perf_counter() - started
    if thread.status != Status.DONE:
        raise RuntimeError(f"the bench thread ended {thread.status.value}")
    return elapsed


async def _measure(calls: int, delay: float, rounds: int) -> dict[str, list[float]]:
    variants: dict[str, dict[str, Any]] = {
        "parallel": {"max_parallel_tools": calls},
        "sequential": {"max_parallel_tools": 1},
        "one resource": {"resource_keys": {"lookup": "one"}, "max_parallel_tools": calls},
    }
    out: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, options in variants.items():  # interleaved: load affects all alike
            out[name].append(await _thread_seconds(_agent(calls, delay, **options)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    samples = asyncio.run(_measure(args.calls, args.delay, args.rounds))
    med = {name: statistics.median(v) for name, v in samples.items()}
    base = med["sequential"]
    results = {
        "calls": args.calls,
        "delay_s": args.delay,
        "rounds": args.rounds,
        "median_s": med,
        "ratios": {
            "sequential_vs_parallel": base / med["parallel"],
            "one_resource_vs_parallel": med["one resource"] / med["parallel"],
        },
    }
    table = Table(
        title=f"One answer with {args.calls} read-only calls of {args.delay:g}s each, "
        f"median of {args.rounds} interleaved rounds"
    )
    table.add_column("variant")
    table.add_column("thread wall time (s)", justify="right")
    table.add_column("vs sequential", justify="right")
    for name, seconds in med.items():
        table.add_row(name, f"{seconds:.3f}", f"{base / seconds:.2f}x faster")
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
