"""The agent loop as users run it: Threadline through its public API and LangGraph, side by side.

One run of the loop is 10 model turns: 9 calls of a cheap read-only tool, then a final
answer, from an instant scripted model. A figure is wall time per model turn.

  * Threadline, default: `Runtime.launch` (which advances to the end) with the default
    renderer (compact format, budgeted) on `MemoryStore` and on `SQLiteStore` (WAL,
    synchronous=FULL, its default).
  * Threadline, renderer-less: the same with a renderer that returns a constant context,
    so the figure is decide + validation + dispatch + append only (a lower bound, labelled).
  * LangGraph: the same loop as a graph (model node -> tool node), without a checkpointer
    and with `SqliteSaver` (durability="sync"; WAL, synchronous=FULL set on the connection).
  * SQLite's own durable commit of one event-sized row (WAL, synchronous=FULL).

Growth: one thread run to 1,000 model turns with the default renderer and a 16k window (so
the budget compacts); the median turn at turns 990-1000 over the median at turns 1-10.
"""

from __future__ import annotations

import asyncio
import json
import operator
import sqlite3
import statistics
import threading
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

from threadline import Agent, ContextSettings, MemoryStore, Runtime, SQLiteStore, Store, tool
from threadline.models.base import Context, Message, ModelOutput, ModelProfile
from threadline.stores.sqlite import PIPELINE_DEPTH

TURNS = 10  # model turns per loop: 9 tool calls and a final answer
CALL = '{"intent": "lookup", "arguments": {"key": "abc"}}'
DONE = '{"intent": "done_for_now", "arguments": {"message": "ABC"}}'
CONSTANT = Context(system="bench", messages=(Message("user", "go"),))


@tool
async def lookup(key: str) -> str:
    """Read-only lookup of a key."""
    return key.upper()


class ScriptModel:
    """Instant: `turns - 1` lookups, then the final answer; loops run one at a time."""

    model_id = "instant"
    profile = ModelProfile()

    def __init__(self, turns: int = TURNS) -> None:
        self.turns = turns
        self.n = 0

    async def request(self, context: Context) -> ModelOutput:
        self.n += 1
        if self.n >= self.turns:
            self.n = 0
            return ModelOutput(text=DONE, model="instant")
        # A new key each turn: the same call repeated is refused as a loop (loop_guard).
        return ModelOutput(text=CALL.replace("abc", f"abc{self.n}"), model="instant")


def agent(renderer: bool, turns: int = TURNS, window: int | None = None) -> Agent:
    extra: dict[str, Any] = {} if renderer else {"renderer": lambda agent, thread: CONSTANT}
    return Agent(
        "bench",
        tools=[lookup],
        max_steps=turns + 5,
        model=ScriptModel(turns),
        context=ContextSettings(context_window=window) if window else ContextSettings(),
        **extra,
    )


async def _loops(store: Store, the_agent: Agent, loops: int) -> float:
    rt = Runtime(store, agents=[the_agent])
    started = time.perf_counter()
    for _ in range(loops):
        thread = await rt.launch(the_agent, "look up abc")
        if thread.status != "done" and len(thread) < 2 * TURNS:
            raise RuntimeError(f"bench loop stopped early: {thread.status}, {len(thread)} events")
    return (time.perf_counter() - started) / (loops * TURNS) * 1e6


def threadline_us(
    tmpdir: Path,
    store_kind: str,
    renderer: bool,
    loops: int,
    *,
    pipelined: bool = True,
    depth: int = PIPELINE_DEPTH,
) -> float:
    """Microseconds per model turn through Runtime.launch/advance (`pipelined`: SQLite's
    read-only turns commit behind the next model call, its default; `depth`: how many
    may be on their way to disk at once, `pipeline_depth`)."""

    async def go() -> float:
        if store_kind == "memory":
            return await _loops(MemoryStore(), agent(renderer), loops)
        path = tmpdir / f"tl-{time.monotonic_ns()}.db"
        store = SQLiteStore(path, pipelined=pipelined, pipeline_depth=depth)
        try:
            return await _loops(store, agent(renderer), loops)
        finally:
            await store.close()

    return asyncio.run(go())


class State(TypedDict):
    messages: Annotated[list[dict[str, Any]], operator.add]
    n: int


def _graph() -> Any:
    from langgraph.graph import END, START, StateGraph

    def model(state: State) -> dict[str, Any]:
        n = state["n"] + 1
        text = DONE if n >= TURNS else CALL
        return {"messages": [{"role": "assistant", "content": json.loads(text)}], "n": n}

    def run_tool(state: State) -> dict[str, Any]:
        args = state["messages"][-1]["content"]["arguments"]
        return {"messages": [{"role": "tool", "content": args["key"].upper()}]}

    def route(state: State) -> str:
        return END if state["n"] >= TURNS else "tool"

    graph = StateGraph(State)
    graph.add_node("model", model)
    graph.add_node("tool", run_tool)
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", route)
    graph.add_edge("tool", "model")
    return graph


def langgraph_us(tmpdir: Path, checkpointed: bool, loops: int) -> float | None:
    """Microseconds per model turn for LangGraph on the same loop, or None if not installed."""
    try:
        graph = _graph()
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError:
        return None
    conn = None
    if checkpointed:
        conn = sqlite3.connect(tmpdir / f"lg-{time.monotonic_ns()}.db", check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        app = graph.compile(checkpointer=SqliteSaver(conn))
    else:
        app = graph.compile()
    started = time.perf_counter()
    for i in range(loops):
        config = {"configurable": {"thread_id": f"t{i}"}}
        kwargs = {"durability": "sync"} if checkpointed else {}
        out = app.invoke(
            {"messages": [{"role": "user", "content": "go"}], "n": 0}, config, **kwargs
        )
        if out["n"] != TURNS:
            raise RuntimeError("langgraph loop stopped early")
    elapsed = time.perf_counter() - started
    if conn is not None:
        conn.close()
    return elapsed / (loops * TURNS) * 1e6


WARM_TURNS = 50
"""Turns of a thrown-away thread before the growth test's thread (`growth`)."""


def growth(turns: int = 1000, window: int = 16_000) -> dict[str, float]:
    """Median turn cost near turn `turns` over near turn 10 (default renderer, compacting)."""

    async def go() -> dict[str, float]:
        # One scripted model for both threads: its turns are counted across them.
        the_agent = agent(True, turns=WARM_TURNS + turns + 10, window=window)
        rt = Runtime(MemoryStore(), agents=[the_agent])
        # Warm first (a thread of WARM_TURNS turns, thrown away): otherwise turns 1-10 carry
        # the process's first-use costs and the ratio comes out low, 0.63-0.82 where a
        # warm process gives 1.30 (docs/performance.md, "A warm growth test").
        warm = await rt.launch(the_agent, "look up abc, every time", advance=False)
        for _ in range(WARM_TURNS):
            warm = await rt.advance(warm, max_steps=2)
        thread = await rt.launch(the_agent, "look up abc, every time", advance=False)
        times: list[float] = []
        for _ in range(turns):  # one model turn and its tool call per iteration
            started = time.perf_counter()
            thread = await rt.advance(thread, max_steps=2)
            times.append(time.perf_counter() - started)
        if thread.status != "running" or len(thread) < 3 * turns:
            raise RuntimeError(f"growth thread stopped: {thread.status}, {len(thread)} events")
        early = statistics.median(times[:10])
        late = statistics.median(times[-10:])
        return {"turn_10_us": early * 1e6, "turn_1000_us": late * 1e6, "ratio": late / early}

    return asyncio.run(go())


def _schedule() -> tuple[float, float]:
    """This thread so far (Linux; zeros elsewhere): seconds on a CPU, and runnable but
    waiting for one (/proc schedstat)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
            on_cpu, waiting = f.read().split()[:2]
    except OSError:
        return 0.0, 0.0
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def turn_accounting(
    tmpdir: Path,
    renderer: bool,
    loops: int,
    *,
    pipelined: bool = True,
    depth: int = PIPELINE_DEPTH,
) -> dict[str, float]:
    """Where a SQLite FULL turn goes, per model turn, in microseconds (counts per turn):

    wall; the event loop's thread on a CPU (`cpu`: Python, and the statements it runs),
    runnable but waiting for a CPU (`runnable`: what a loaded machine adds) and neither
    (`blocked`: waiting for the disk, an inline `COMMIT` or a commit in flight);
    `commits` (fsyncs) and `behind` (pipelined appends: committed on their own thread
    while the loop went on) per turn, `queued` (of them, those that shared a `COMMIT` with
    the append before, queued behind it) and `behind_us`, those `COMMIT`s' time. Without
    load, a turn is about `cpu` plus `blocked`; a `COMMIT` behind the loop is hidden but
    for the part of it the loop waits for (`blocked`)."""

    async def go() -> dict[str, float]:
        path = tmpdir / f"where-{time.monotonic_ns()}.db"
        store = SQLiteStore(path, pipelined=pipelined, pipeline_depth=depth)
        the_agent = agent(renderer)
        rt = Runtime(store, agents=[the_agent])
        try:
            await rt.launch(the_agent, "warm up")  # connections opened, caches filled
            stats = store.stats
            commits, behind, queued = stats.commits, stats.behind, stats.queued
            behind_s = stats.behind_seconds
            cpu, runnable = _schedule()
            started = time.perf_counter()
            for _ in range(loops):
                await rt.launch(the_agent, "look up abc")
            wall = time.perf_counter() - started
            cpu2, runnable2 = _schedule()
        finally:
            await store.close()
        turns = loops * TURNS
        return {
            "wall": wall / turns * 1e6,
            "cpu": (cpu2 - cpu) / turns * 1e6,
            "runnable": (runnable2 - runnable) / turns * 1e6,
            "blocked": (wall - (cpu2 - cpu) - (runnable2 - runnable)) / turns * 1e6,
            "commits": (stats.commits - commits) / turns,
            "behind": (stats.behind - behind) / turns,
            "queued": (stats.queued - queued) / turns,
            "behind_us": (stats.behind_seconds - behind_s) / turns * 1e6,
        }

    return asyncio.run(go())


def main() -> None:
    """`python bench/loop.py [ROUNDS] [LOOPS]`: `turn_accounting` for both renderers,
    pipelined at the default depth (2) and 1, and not pipelined, interleaved rounds (the
    order rotating), medians."""
    import os
    import sys
    import tempfile

    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    loops = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    configs = [(renderer, depth) for renderer in (False, True) for depth in (PIPELINE_DEPTH, 1, 0)]
    runs: dict[tuple[bool, int], list[dict[str, float]]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for renderer, depth in configs[r % 6 :] + configs[: r % 6]:
                runs[renderer, depth].append(
                    turn_accounting(
                        Path(tmp), renderer, loops, pipelined=depth > 0, depth=max(depth, 1)
                    )
                )
    for (renderer, depth), rows in runs.items():
        medians = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        counts = ("commits", "behind", "queued")
        shown = ", ".join(
            f"{k} {v:.2f}" if k in counts else f"{k} {v:,.0f}" for k, v in medians.items()
        )
        label = f"{'default renderer' if renderer else 'renderer-less'}, " + (
            f"pipelined, depth {depth}" if depth else "not pipelined"
        )
        print(f"SQLite FULL, {label}: {shown}")
    print(f"load average {os.getloadavg()[0]:.1f}")


__all__ = ["growth", "langgraph_us", "threadline_us", "turn_accounting"]

if __name__ == "__main__":
    main()
