"""What tool retries and per-tool breakers cost a turn of the loop (issue 13).

The loop of bench/loop.py (10 model turns: 9 read-only lookups and a final answer, an
instant scripted model, the renderer-less agent so the figure is the runtime's own work),
through `Runtime.launch`, on `MemoryStore` and on `SQLiteStore` (WAL, synchronous=FULL).
Three tools, the same lookup:

  * baseline: `breaker=None` (no breaker bookkeeping);
  * breaker: the default `ToolBreaker()` (what every tool has): the breaker's check and
    record on every call;
  * retried: the default breaker, and every call fails once with `RetryableToolError`
    and answers on attempt 2 (backoff 0, so no sleep is measured): one
    `tool_attempt_failed` more per call, and the read-only turn's single commit split in
    two (the attempt is committed before the retry runs).

Every round measures every row once, in turn, after a dropped warm-up round; each figure
is the median over rounds of the row's time per model turn divided by the baseline's in
the same round.

Run: python bench/retries.py [--rounds 7] [--loops 20] [--json results.json]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from threadline import (
    Agent,
    MemoryStore,
    RetryableToolError,
    Runtime,
    SQLiteStore,
    Store,
    Tool,
    ToolContext,
    ToolRetry,
    tool,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loop  # bench/ modules, next to this file
import per_turn

NO_WAIT = ToolRetry(base_delay=0.0)


@tool(name="lookup", breaker=None)
async def bare(key: str) -> str:
    """Read-only lookup of a key."""
    return key.upper()


@tool(name="lookup")
async def guarded(key: str) -> str:
    """Read-only lookup of a key."""
    return key.upper()


@tool(name="lookup", retry=NO_WAIT)
async def flaky(key: str, ctx: ToolContext) -> str:
    """Read-only lookup of a key (busy on the first attempt)."""
    if ctx.attempt == 1:
        raise RetryableToolError("busy")
    return key.upper()


ROWS: dict[str, Tool] = {"baseline": bare, "breaker": guarded, "retried": flaky}


def _agent(lookup_tool: Tool) -> Agent:
    return Agent(
        "bench",
        tools=[lookup_tool],
        max_steps=loop.TURNS + 5,
        model=loop.ScriptModel(loop.TURNS),
        renderer=lambda agent, thread: loop.CONSTANT,
    )


async def _per_turn_us(store: Store, lookup_tool: Tool, loops: int) -> float:
    the_agent = _agent(lookup_tool)
    rt = Runtime(store, agents=[the_agent])
    started = time.perf_counter()
    for _ in range(loops):
        thread = await rt.launch(the_agent, "look up abc")
        if thread.status.value != "done":
            raise RuntimeError(f"bench loop ended {thread.status.value}")
    return (time.perf_counter() - started) / (loops * loop.TURNS) * 1e6


def _measure(tmpdir: Path, kind: str, name: str, loops: int, n: int) -> float:
    async def go() -> float:
        if kind == "memory":
            return await _per_turn_us(MemoryStore(), ROWS[name], loops)
        async with SQLiteStore(tmpdir / f"{kind}-{name}-{n}.db") as store:
            return await _per_turn_us(store, ROWS[name], loops)

    return asyncio.run(go())


def run(rounds: int, loops: int) -> dict[str, Any]:
    """{store: {row: {"us": median µs per turn, "ratio": median ratio to baseline}}}."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("memory", "sqlite"):
            times: dict[str, list[float]] = {name: [] for name in ROWS}
            ratios: dict[str, list[float]] = {name: [] for name in ROWS}
            for n in range(rounds + 1):
                measured = {name: _measure(Path(tmp), kind, name, loops, n) for name in ROWS}
                if n == 0:
                    continue  # warm-up
                for name, us in measured.items():
                    times[name].append(us)
                    ratios[name].append(us / measured["baseline"])
            out[kind] = {
                name: {
                    "us": round(statistics.median(times[name]), 1),
                    "ratio": round(statistics.median(ratios[name]), 3),
                }
                for name in ROWS
            }
    return out


if __name__ == "__main__":
    per_turn.main(__doc__, run)
