"""Instructions per model turn of bench/loop.py's loop, counted by valgrind's callgrind.

Wall time on a shared machine moves with everyone else's load; an instruction count does
not (the same binary and inputs give the same count whatever the other cores do). Each row
runs the loop twice under `valgrind --tool=callgrind`, with N loops and with none, and
divides the difference by the turns: imports and start-up cancel out.

    python bench/instructions.py [--loops 40] [--rows bare,default,langgraph] [--loop-only]

`--loop-only` counts the measured loops alone, in one run per row: the warm-up loops run
first, then the measured ones inside `operator.call`, and callgrind collects only while
that C function is on the stack (`--collect-atstart=no --toggle-collect=_operator_call`),
so imports, set-up and the warm-up are left out by construction rather than by a
difference. It is deterministic to about 0.1% from run to run and comes out slightly
lower than the default mode (which also counts what each extra loop leaves behind for the
interpreter's exit to free).

Rows: Threadline through `Runtime.launch` on `MemoryStore` with the default renderer
(`default`) and with a constant context (`bare`, the renderer-less lower bound), and
LangGraph's graph of the same loop without a checkpointer (`langgraph`). Slow: a row takes
about a minute under valgrind. `--rows sqlite,sqlite-depth1,sqlite-serial`: the default
renderer on a SQLite file at synchronous=FULL, pipelined at the default
`pipeline_depth` (3) and 1, and not pipelined: the CPU a turn spends besides waiting for the disk
(an fsync is a wait, not instructions). With `--loop-only` only the event loop's thread
is counted (callgrind collects on the thread inside `operator.call`), so a `COMMIT` run
on the flusher's thread is left out: what the loop spends on a turn; without it, every
thread's instructions.

The render alone (`--rows replay,render`): one loop's thread is recorded, then each loop
appends its events to a new thread one by one, rendering with the default renderer before
every model call as the runtime does (`render`), or not (`replay`); `render - replay` is
what the renderer costs per model turn, without the rest of the turn.

A level-1 extension (`--rows cut`, reported per render): the plan's 300-turn thread (below)
is appended again event by event to a new thread; the renderer plans in full once at the
first model call after a compaction from turn 200 on (before the measured region), then
renders before each of the next N model calls (N < 32, before the next compaction), each
an extension at detail level 1 whose older results are cut (the prompt-cache marks
included).

A full plan (`--rows plan`, reported per plan): what a thread's first render, a new
compaction or retrieved material costs. One thread of bench/render_growth.py's cut-results
form (16k window, 1,500-character results cut to 100 tokens, `keep_recent=4`) is run to 300
turns, then rendered again N times by one renderer without tails (its blocks cached, as at
a compaction).
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loop  # bench/loop.py, next to this file

from threadline.events import Compacted, ModelCall, Thread

ROWS = ("bare", "default", "langgraph")
SQLITE_ROWS = ("sqlite", "sqlite-depth1", "sqlite-serial")
RENDER_ROWS = ("replay", "render")
PLAN_ROWS = ("plan", "cut")
_VALGRIND = ("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null")
_LOOP_ONLY = ("--collect-atstart=no", "--toggle-collect=_operator_call")
"""Collect only inside `operator.call` (`measured`), which nothing else in the loop calls."""
WARM_UP = 3


def measured(work: Callable[[], object]) -> None:
    """Run `work` inside `operator.call`: the region `--loop-only` counts."""
    operator.call(work)


def run_loops(row: str, loops: int) -> None:
    """The measured work: 3 warm-up loops, then `loops` loops of 10 turns (the latter
    inside `measured`)."""
    if row == "langgraph":
        app = loop._graph().compile()

        def graph_loops(first: int, n: int) -> None:
            for i in range(first, first + n):
                config = {"configurable": {"thread_id": f"t{i}"}}
                app.invoke({"messages": [{"role": "user", "content": "go"}], "n": 0}, config)

        graph_loops(0, WARM_UP)
        measured(lambda: graph_loops(WARM_UP, loops))
        return

    if row in RENDER_ROWS:
        renders(row == "render", loops)
        return
    if row == "plan":
        plans(loops)
        return
    if row == "cut":
        cut_renders(loops)
        return

    agent = loop.agent(row != "bare")
    store: loop.Store = loop.MemoryStore()
    if row in SQLITE_ROWS:  # the default renderer on a SQLite file, FULL
        depth = {"sqlite": loop.PIPELINE_DEPTH, "sqlite-depth1": 1, "sqlite-serial": 1}[row]
        path = Path(tempfile.mkdtemp()) / "instructions.db"
        store = loop.SQLiteStore(path, pipelined=row != "sqlite-serial", pipeline_depth=depth)
    runtime = loop.Runtime(store, agents=[agent])

    async def launches(n: int) -> None:
        for _ in range(n):
            thread = await runtime.launch(agent, "look up abc")
            if thread.status != "done":
                raise RuntimeError(f"loop stopped early: {thread.status}")

    event_loop = asyncio.new_event_loop()
    try:
        event_loop.run_until_complete(launches(WARM_UP))
        measured(lambda: event_loop.run_until_complete(launches(loops)))
        event_loop.run_until_complete(store.close())
    finally:
        event_loop.close()


def renders(render: bool, loops: int) -> None:
    """The renders of `loops` loops' threads (see the module docstring)."""
    agent = loop.agent(True)
    runtime = loop.Runtime(loop.MemoryStore(), agents=[agent])
    recorded = asyncio.run(runtime.launch(agent, "look up abc"))
    renderer = runtime.renderer(agent.name)

    def replays(first: int, n: int) -> None:
        for i in range(first, first + n):
            thread = Thread(f"replay-{i}", agent.name)
            for event in recorded.events:
                if render and isinstance(event, ModelCall):
                    renderer.prepare_now(thread, agent.model, event.at)
                thread.append(event)

    replays(0, WARM_UP)
    measured(lambda: replays(WARM_UP, loops))


def plans(n: int) -> None:
    """`n` full plans of a 300-turn thread whose older results are cut (module docstring)."""
    from threadline.prompts import renderer_for

    thread, agent, model = cut_thread()
    renderer = renderer_for(agent)
    renderer._tails = None  # every render plans from the window
    renderer.bind(model)
    renderer.render(thread)

    def again() -> None:
        for _ in range(n):
            renderer.render(thread)

    measured(again)


def cut_renders(n: int) -> None:
    """A full plan of the 300-turn cut-results thread at the first model call after a
    compaction from turn 200 on, then `n` extensions, one before each later model call
    (module docstring; the thread compacts every 33 calls, so `n` stays below 32)."""
    from threadline.prompts import renderer_for

    grown, agent, model = cut_thread()
    renderer = renderer_for(agent)
    renderer.bind(model)
    thread = Thread("cut", agent.name)
    events = iter(grown.events)
    calls, compacted = 0, False
    for event in events:  # up to the first model call after a compaction from turn 200 on
        compacted = compacted or (isinstance(event, Compacted) and calls >= 200)
        if isinstance(event, ModelCall):
            calls += 1
            if compacted:
                renderer.render(thread)  # the full plan, outside the measured region
                thread.append(event)
                break
        thread.append(event)

    def extensions() -> None:
        done = 0
        for event in events:
            if isinstance(event, ModelCall):
                if done == n:
                    return
                renderer.render(thread)
                done += 1
            thread.append(event)

    measured(extensions)


def cut_thread() -> tuple[Thread, Any, Any]:
    """(bench/render_growth.py's cut-results thread run to 300 turns, its agent, model)."""
    import render_growth  # bench/render_growth.py

    from threadline import Agent, ContextSettings

    settings = ContextSettings(context_window=16_000, max_result_tokens=100, keep_recent=4)
    model = loop.ScriptModel(350)
    agent = Agent(
        "bench", tools=[render_growth.lookup_page], max_steps=400, model=model, context=settings
    )
    runtime = loop.Runtime(loop.MemoryStore(), agents=[agent])

    async def grow() -> Thread:
        thread = await runtime.launch(agent, "look up abc, every time", advance=False)
        for _ in range(300):
            thread = await runtime.advance(thread, max_steps=2)
        return thread

    return asyncio.run(grow()), agent, model


def instructions(row: str, loops: int, *, loop_only: bool = False) -> int:
    """Instructions callgrind counts for one process running `loops` loops of `row`: the
    whole process, or (`loop_only`) the measured loops alone."""
    only = _LOOP_ONLY if loop_only else ()
    out = subprocess.run(
        [*_VALGRIND, *only, sys.executable, __file__, "--run", row, "--loops", str(loops)],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ,
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind: {out.stderr[-500:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", type=int, default=40)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument(
        "--loop-only", action="store_true", help="count the measured loops alone (one run a row)"
    )
    every = ROWS + SQLITE_ROWS + RENDER_ROWS + PLAN_ROWS
    parser.add_argument("--run", choices=every, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_loops(args.run, args.loops)
        return
    per_turn: dict[str, float] = {}
    for row in args.rows.split(","):
        if args.loop_only:
            extra = instructions(row, args.loops, loop_only=True)
        else:
            extra = instructions(row, args.loops) - instructions(row, 0)
        if row in PLAN_ROWS:
            what = "full plan" if row == "plan" else "level-1 extension"
            print(f"{row}: {extra / args.loops:,.0f} instructions per {what}", flush=True)
            continue
        per_turn[row] = extra / (args.loops * loop.TURNS)
        print(f"{row}: {per_turn[row]:,.0f} instructions per model turn", flush=True)
    if "render" in per_turn and "replay" in per_turn:
        alone = per_turn["render"] - per_turn["replay"]
        print(f"the render alone: {alone:,.0f} instructions per model turn")
    base = per_turn.get("langgraph")
    for row in ("bare", "default"):
        if base and row in per_turn:
            print(f"{row} / langgraph: {per_turn[row] / base:.3f}")


if __name__ == "__main__":
    main()
