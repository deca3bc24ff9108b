"""Rate limits: what a limit costs when it does not bind, and how close to it a binding one runs.

* **overhead**: threads of one instant model call each, on one SQLite store, with a model
  limit far above what they use (every call takes and frees a slot: two statements) vs no
  limit; interleaved rounds, median seconds per thread, the ratio limited / free.
* **utilization**: THREADS threads of two model calls each at once, on SQLite, under
  `LIMIT` calls per `PER` seconds, advanced in process as a worker would (each waits until
  its ticket, then asks again); the rate achieved over the limit's rate (1.0 is the limit
  itself, never more), and the waits per call (each wait is two events).

Run: python bench/ratelimits.py [--threads 40] [--limit 10] [--per 1] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from threadline import Agent, Rate, RateLimits, Runtime, SQLiteStore, Status, Thread, tool
from threadline.events import Waiting, utcnow
from threadline.models.base import Context
from threadline.testing import FunctionModel, intent


def _agent() -> Agent:
    def answer(context: Context) -> dict[str, Any]:
        return intent("done_for_now", message="done")

    return Agent("bench", model=FunctionModel(answer, model_id="bench:v1"))


async def _seconds_per_thread(limits: RateLimits | None, threads: int, folder: Path) -> float:
    agent = _agent()
    async with SQLiteStore(folder / f"overhead-{time.monotonic_ns()}.db") as store:
        runtime = Runtime(store, agents=[agent], rate_limits=limits)
        await runtime.launch(agent, "warm up")
        started = time.perf_counter()
        for _ in range(threads):
            thread = await runtime.launch(agent, "go")
            if thread.status is not Status.DONE:
                raise RuntimeError(f"the bench thread ended {thread.status.value}")
        return (time.perf_counter() - started) / threads


async def _until_done(runtime: Runtime, thread: Thread) -> Thread:
    while thread.status is Status.WAITING and thread.state.waiting_until is not None:
        await asyncio.sleep(max(0.0, (thread.state.waiting_until - utcnow()).total_seconds()))
        thread = await runtime.advance(await runtime.wake_if_due(thread))
    return thread


async def _utilization(threads: int, limit: int, per: float, folder: Path) -> dict[str, float]:
    arrivals: list[float] = []

    def answer(context: Context) -> dict[str, Any]:
        arrivals.append(time.time())
        if context.model_calls == 0:
            return intent("think", thought="first look")
        return intent("done_for_now", message="done")

    @tool
    def think(thought: str) -> str:
        """Think out loud.

        Args:
            thought: the thought.
        """
        return "ok"

    agent = Agent("paced", tools=[think], model=FunctionModel(answer, model_id="bench:v1"))
    limits = RateLimits(models={"bench": Rate(limit, per)})
    async with SQLiteStore(folder / "utilization.db") as store:
        runtime = Runtime(store, agents=[agent], rate_limits=limits)

        async def one(n: int) -> Thread:
            return await _until_done(runtime, await runtime.launch(agent, f"task {n}"))

        done = await asyncio.gather(*(one(n) for n in range(threads)))
    if any(t.status is not Status.DONE for t in done):
        raise RuntimeError("a bench thread did not finish")
    waits = sum(isinstance(e, Waiting) for t in done for e in t.events)
    span = max(arrivals) - min(arrivals)
    # n calls under `limit` per `per` need at least (n / limit - 1) intervals after the first.
    floor = (len(arrivals) / limit - 1) * per
    return {
        "calls": len(arrivals),
        "seconds": span,
        "rate_over_limit": (len(arrivals) / span) / (limit / per) if span else 0.0,
        "floor_over_seconds": floor / span if span else 0.0,
        "waits_per_call": waits / len(arrivals),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        free: list[float] = []
        limited: list[float] = []
        loose = RateLimits(models={"bench": Rate(10_000, 60.0)})  # a large provider tier
        for _ in range(args.rounds):  # interleaved, so load drifts hit both alike
            free.append(await _seconds_per_thread(None, args.turns, folder))
            limited.append(await _seconds_per_thread(loose, args.turns, folder))
        use = await _utilization(args.threads, args.limit, args.per, folder)
    return {
        "overhead": {
            "free_ms": statistics.median(free) * 1000,
            "limited_ms": statistics.median(limited) * 1000,
            "ratio": statistics.median(limited) / statistics.median(free),
        },
        "utilization": use,
    }


def _report(result: dict[str, Any]) -> None:
    table = Table(title="rate limits (SQLite)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    over = result["overhead"]
    table.add_row("thread, no limit (ms, median)", f"{over['free_ms']:.2f}")
    table.add_row("thread, limit not binding (ms, median)", f"{over['limited_ms']:.2f}")
    table.add_row("ratio limited / no limit", f"{over['ratio']:.2f}")
    use = result["utilization"]
    table.add_row("binding: calls", f"{use['calls']:.0f} in {use['seconds']:.1f}s")
    table.add_row("binding: rate / limit", f"{use['rate_over_limit']:.2f}")
    table.add_row("binding: fastest possible / took", f"{use['floor_over_seconds']:.2f}")
    table.add_row("binding: waits per call", f"{use['waits_per_call']:.2f}")
    Console().print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=40)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--per", type=float, default=1.0)
    parser.add_argument("--turns", type=int, default=100, help="threads per overhead round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    outcome = asyncio.run(main(arguments))
    _report(outcome)
    if arguments.json:
        arguments.json.write_text(json.dumps(outcome, indent=2))
