"""What dispatch guards cost a turn of the loop (issue 13).

The loop of bench/loop.py (10 model turns: 9 read-only lookups and a final answer, an
instant scripted model, the renderer-less agent so the figure is the runtime's own work),
through `Runtime.launch`, on `MemoryStore` and on `SQLiteStore` (WAL, synchronous=FULL):

  * baseline: no guards;
  * policy: one plain function guard that allows every call (one `guard_verdict` more per
    call, written in the turn's single commit);
  * judge: a `Judge` whose model answers "allow" at once (the judge's context built from
    its template, its answer parsed, its usage recorded): the runtime's share of a judge,
    without the judge model's own latency.

Every round measures every row once, in turn, after a dropped warm-up round; each figure
is the median over rounds of the row's time per model turn divided by the baseline's in
the same round.

Run: python bench/guards.py [--rounds 7] [--loops 20] [--json results.json]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from threadline import Agent, GuardCall, GuardDecision, Judge, MemoryStore, Runtime, SQLiteStore
from threadline.guards import allow
from threadline.testing import FunctionModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loop  # bench/ modules, next to this file
import per_turn

VERDICT = '{"reason": "a read-only lookup", "verdict": "allow"}'


def allow_all(call: GuardCall) -> GuardDecision:
    return allow()


GUARDS: dict[str, list[Any]] = {
    "baseline": [],
    "policy": [allow_all],
    "judge": [Judge(FunctionModel(lambda context: VERDICT, model_id="bench-judge"))],
}


def _agent(guards: list[Any]) -> Agent:
    return Agent(
        "bench",
        tools=[loop.lookup],
        max_steps=loop.TURNS + 5,
        model=loop.ScriptModel(loop.TURNS),
        renderer=lambda agent, thread: loop.CONSTANT,
        guards=guards,
    )


async def _loops(rt: Runtime, agent: Agent, loops: int) -> float:
    started = time.perf_counter()
    for _ in range(loops):
        thread = await rt.launch(agent, "look up abc")
        if thread.status.value != "done":
            raise RuntimeError(f"bench loop ended {thread.status.value}")
    return (time.perf_counter() - started) / (loops * loop.TURNS) * 1e6


async def _round(tmp: Path, kind: str, loops: int, n: int) -> dict[str, float]:
    """µs per turn of each row, measured once each, in turn."""
    out: dict[str, float] = {}
    for name, guards in GUARDS.items():
        agent = _agent(guards)
        if kind == "memory":
            out[name] = await _loops(Runtime(MemoryStore(), agents=[agent]), agent, loops)
            continue
        async with SQLiteStore(tmp / f"{name}-{n}.db") as store:
            out[name] = await _loops(Runtime(store, agents=[agent]), agent, loops)
    return out


def run(rounds: int, loops: int) -> dict[str, Any]:
    """{store: {row: {"us": median µs per turn, "ratio": median ratio to baseline}}}."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("memory", "sqlite"):
            measured = [asyncio.run(_round(Path(tmp), kind, loops, n)) for n in range(rounds + 1)]
            kept = measured[1:]  # the first round warms up
            results[kind] = {
                name: {
                    "us": round(statistics.median(r[name] for r in kept), 1),
                    "ratio": round(statistics.median(r[name] / r["baseline"] for r in kept), 3),
                }
                for name in GUARDS
            }
    return results


if __name__ == "__main__":
    per_turn.main(__doc__, run)
