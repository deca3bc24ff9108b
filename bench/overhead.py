"""Per-step runtime overhead: decide + validation + dispatch + checkpointed append.

Not measured: the model (an instant model returns a prepared answer) and context rendering
(the agent's renderer returns a constant context). Each measured step starts from a thread
of exactly 10, 100 or 1,000 events, so the long/short ratio shows whether a step's cost
grows with the thread (it must not: derived state is folded incrementally).

Baselines, measured in the same run:
  * SQLite's own durable commit: one INSERT + COMMIT of an event-sized row on a connection
    with the same settings (WAL, synchronous=FULL).
  * LangGraph's checkpointed loop on the same work (model node -> tool node, SqliteSaver,
    durability="sync"), when langgraph is installed (`make bench` installs it).

Part 2 (the loop as users run it, bench/loop.py): Runtime.launch/advance with the default
renderer, the renderer-less figure as a second labelled row, LangGraph on the same loop in
memory and with SqliteSaver, and the growth of a turn's cost to turn 1,000; printed as
ratios against baselines measured in the same rounds, next to issue 15's goals.

Run: python bench/overhead.py [--threads 40] [--json results.json] [--quick] [--loop-only]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypedDict

from rich.console import Console
from rich.table import Table

from threadline import Agent, MemoryStore, Runtime, SQLiteStore, Store, Thread, decide, tool
from threadline.events import ModelCall, ToolCall, ToolResult, UserMessage
from threadline.models.base import Context, Message, ModelOutput, ModelProfile
from threadline.reducer import Wait

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loop  # bench/loop.py, next to this file

LENGTHS = (10, 100, 1000)
console = Console(width=160)


@tool
async def lookup(key: str) -> str:
    """Read-only lookup (async: dispatched on the loop, like LangGraph's inline tool node)."""
    return key.upper()


@tool(name="lookup")
def lookup_sync(key: str) -> str:
    """The same lookup as a sync function: the runtime runs it in a worker thread."""
    return key.upper()


ANSWER = ModelOutput(text='{"intent": "lookup", "arguments": {"key": "abc"}}', model="instant")
CONTEXT = Context(system="bench", messages=(Message("user", "go"),))


class InstantModel:
    model_id = "instant"
    profile = ModelProfile()

    async def request(self, context: Context) -> ModelOutput:
        return ANSWER


AGENT = Agent(
    "bench",
    tools=[lookup],
    max_steps=10**9,
    model=InstantModel(),
    renderer=lambda agent, thread: CONTEXT,
)

SYNC_AGENT = Agent(
    "bench",
    tools=[lookup_sync],
    max_steps=10**9,
    model=InstantModel(),
    renderer=lambda agent, thread: CONTEXT,
)


def prefilled(thread_id: str, length: int) -> Thread:
    """A thread of exactly `length` events that ends ready for a model call."""
    at = datetime.now(UTC)
    thread = Thread(thread_id, "bench", [UserMessage(seq=0, at=at, text="go")])
    while thread.next_seq + 3 <= length:
        n = thread.next_seq
        thread.extend(
            [
                ModelCall(seq=n, at=at, model="instant", output=ANSWER.text),
                ToolCall(
                    seq=n + 1,
                    at=at,
                    call_id=f"c{n + 1}",
                    tool="lookup",
                    version="1",
                    arguments={"key": "abc"},
                ),
                ToolResult(seq=n + 2, at=at, call_id=f"c{n + 1}", tool="lookup", result="ABC"),
            ]
        )
    while thread.next_seq < length:  # pad with user messages to hit the exact length
        thread.append(UserMessage(seq=thread.next_seq, at=at, text="more"))
    return thread


async def per_step_us(
    store: Store, length: int, threads: int, steps: int = 4, agent: Agent = AGENT
) -> float:
    """Mean microseconds per step over `threads` threads, `steps` steps each."""
    rt = Runtime(store, agents=[agent])
    ids = []
    for i in range(threads):
        thread = prefilled(f"th_{length}_{i}_{time.monotonic_ns()}", length)
        await store.create(thread)
        ids.append(thread.id)
    total, count = 0.0, 0
    for thread_id in ids:
        thread = await store.load(thread_id)
        started = time.perf_counter()
        for _ in range(steps):
            step = decide(agent, thread)
            if isinstance(step, Wait):
                raise RuntimeError(f"bench thread stopped: {thread.status}")
            thread = await rt.perform(agent, thread, step)
        total += time.perf_counter() - started
        count += steps
    return total / count * 1e6


def sqlite_commit_us(path: Path, n: int = 400) -> float:
    """SQLite's own durable commit of one event-sized row (WAL, synchronous=FULL)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("DROP TABLE IF EXISTS e")
    conn.execute(
        "CREATE TABLE e (t TEXT, seq INTEGER, body TEXT, PRIMARY KEY (t, seq)) WITHOUT ROWID"
    )
    body = ToolResult(
        seq=0, at=datetime.now(UTC), call_id="c1", tool="lookup", result="ABC"
    ).model_dump_json()
    started = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO e VALUES (?,?,?)", (str(path), i, body))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed / n * 1e6


class State(TypedDict):
    """LangGraph baseline state: the message list grows like a thread."""

    messages: Annotated[list[dict[str, Any]], operator.add]
    n: int


def lg_model(state: State) -> dict[str, Any]:
    call = json.loads(ANSWER.text)
    return {"messages": [{"role": "assistant", "tool_call": call}], "n": state["n"] + 1}


def lg_tool(state: State) -> dict[str, Any]:
    args = state["messages"][-1]["tool_call"]["arguments"]
    return {"messages": [{"role": "tool", "content": args["key"].upper()}]}


def langgraph_step_us(path: Path, steps: int = 200) -> float | None:
    """LangGraph's checkpointed loop on the same work, or None if it is not installed."""
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.graph import END, START, StateGraph
    except ImportError:
        return None

    def route(state: State) -> str:
        return END if state["n"] >= steps // 2 else "tool"

    graph = StateGraph(State)
    graph.add_node("model", lg_model)
    graph.add_node("tool", lg_tool)
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", route)
    graph.add_edge("tool", "model")
    conn = sqlite3.connect(path, check_same_thread=False)
    saver = SqliteSaver(conn)
    app = graph.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "bench"}, "recursion_limit": steps * 2 + 10}
    started = time.perf_counter()
    app.invoke({"messages": [{"role": "user", "content": "go"}], "n": 0}, config, durability="sync")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed / (steps - 1) * 1e6


def median(values: list[float]) -> float:
    return statistics.median(values)


def sqlite_steps(tmpdir: Path, length: int, threads: int, agent: Agent = AGENT) -> float:
    async def go() -> float:
        store = SQLiteStore(tmpdir / f"sqlite-{length}-{time.monotonic_ns()}.db")
        try:
            return await per_step_us(store, length, threads, agent=agent)
        finally:
            await store.close()

    return asyncio.run(go())


def memory_steps(length: int, threads: int) -> float:
    return asyncio.run(per_step_us(MemoryStore(), length, threads))


LOOP_KEYS = (
    ("tl-memory", "memory", True),
    ("tl-memory-bare", "memory", False),
    ("tl-sqlite", "sqlite", True),
    ("tl-sqlite-bare", "sqlite", False),
)


def loop_rounds(rounds: int, loops: int) -> list[dict[str, Any]]:
    """Interleaved rounds of every loop figure (us per model turn) and the commit baseline."""
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        for r in range(rounds + 1):  # round 0 warms imports and caches; it is dropped
            row: dict[str, Any] = {"commit": sqlite_commit_us(tmpdir / f"loop-{r}.db", 200)}
            for key, store, renderer in LOOP_KEYS:
                row[key] = loop.threadline_us(tmpdir, store, renderer, loops)
            row["lg-memory"] = loop.langgraph_us(tmpdir, False, loops)
            row["lg-sqlite"] = loop.langgraph_us(tmpdir, True, loops)
            if r:
                out.append(row)
                console.print(
                    f"  loop round {r}/{rounds}: "
                    + ", ".join(f"{k} {v:.0f} us" for k, v in row.items() if v is not None)
                )
    return out


def loop_report(rounds: list[dict[str, Any]], growth: dict[str, float] | None) -> dict[str, Any]:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    def ratio(top: str, bottom: str) -> float | None:
        if rounds[0][bottom] is None or rounds[0][top] is None:
            return None
        return statistics.median(r[top] / r[bottom] for r in rounds)

    table = Table(
        title=f"Agent loop, per model turn: median of {len(rounds)} interleaved rounds "
        "(10-turn loop: 9 read-only tool calls + final answer, instant model)"
    )
    for col in ("Threadline row", "us/turn", "vs LangGraph same store", "goal", "vs SQLite commit"):
        table.add_column(col, justify="left" if col == "Threadline row" else "right")
    goals = {"memory": 1 / 3, "sqlite": 1 / 5}
    result: dict[str, Any] = {"us": {}, "ratios": {}}
    for key, store, renderer in LOOP_KEYS:
        lg_key = f"lg-{store}"
        vs_lg = ratio(key, lg_key)
        vs_commit = ratio(key, "commit")
        result["us"][key] = med(key)
        result["ratios"][f"{key}/{lg_key}"] = vs_lg
        result["ratios"][f"{key}/commit"] = vs_commit
        label = f"{'MemoryStore' if store == 'memory' else 'SQLiteStore FULL'}, " + (
            "default renderer" if renderer else "renderer-less (constant context)"
        )
        table.add_row(
            label,
            f"{med(key):.0f}",
            "-" if vs_lg is None else f"{vs_lg:.2f}",
            f"<= {goals[store]:.2f}" if renderer else "(lower bound)",
            f"{vs_commit:.2f}",
        )
    console.print(table)
    result["us"]["commit"] = med("commit")
    console.print(f"SQLite durable commit (WAL, FULL): {med('commit'):.0f} us", highlight=False)
    if rounds[0]["lg-memory"] is not None:
        result["us"]["lg-memory"] = med("lg-memory")
        result["us"]["lg-sqlite"] = med("lg-sqlite")
        console.print(
            f"LangGraph: {med('lg-memory'):.0f} us/turn without a checkpointer, "
            f"{med('lg-sqlite'):.0f} us/turn with SqliteSaver (WAL, FULL, durability=sync)",
            highlight=False,
        )
    else:
        console.print("LangGraph: not installed (make bench installs it)")
    if growth is not None:
        result["growth"] = growth
        console.print(
            f"Growth (default renderer, 16k window, MemoryStore): median turn "
            f"{growth['turn_10_us']:.0f} us at turns 1-10, {growth['turn_1000_us']:.0f} us at "
            f"the last 10 of {growth['turns']:.0f}: ratio {growth['ratio']:.2f} (goal < 1.3)",
            highlight=False,
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=20, help="threads per length per round")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved measurement rounds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--loops", type=int, default=20, help="10-turn loops per figure per round")
    parser.add_argument("--growth-turns", type=int, default=1000, help="0 skips the growth test")
    parser.add_argument("--quick", action="store_true", help="few rounds, a shorter growth test")
    parser.add_argument("--loop-only", action="store_true", help="only part 2 (the agent loop)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.threads, args.loops = 3, 5, 5
        args.growth_turns = min(args.growth_turns, 300)
    growth = None
    if args.growth_turns:
        console.print(f"growth test: {args.growth_turns} turns ...")
        growth = {"turns": float(args.growth_turns), **loop.growth(args.growth_turns)}
    loop_result = loop_report(loop_rounds(args.rounds, args.loops), growth)
    if args.loop_only:
        if args.json:
            args.json.write_text(json.dumps({"loop": loop_result}, indent=2, default=str))
        return
    # Disk and CPU speed drift on a shared machine: every round measures the baseline and
    # then the steps right after it, and each ratio is the median of the per-round ratios.
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        for r in range(args.rounds):
            row: dict[str, Any] = {"commit": sqlite_commit_us(tmpdir / f"baseline-{r}.db", 200)}
            for length in LENGTHS:
                row[f"memory-{length}"] = memory_steps(length, args.threads)
                row[f"sqlite-{length}"] = sqlite_steps(tmpdir, length, args.threads)
            row["sqlite-sync-tool"] = sqlite_steps(tmpdir, 1000, args.threads, SYNC_AGENT)
            row["langgraph"] = langgraph_step_us(tmpdir / f"langgraph-{r}.db")
            rounds.append(row)
            console.print(
                f"  round {r + 1}/{args.rounds}: commit {row['commit']:.0f} us, sqlite step "
                f"(1000 events) {row['sqlite-1000']:.0f} us, memory step "
                f"{row['memory-1000']:.0f} us"
                + (f", langgraph {row['langgraph']:.0f} us" if row["langgraph"] else "")
            )

    def med(key: str) -> float:
        return median([r[key] for r in rounds])

    def med_ratio(top: str, bottom: str) -> float:
        return median([r[top] / r[bottom] for r in rounds])

    lg = rounds[0]["langgraph"] is not None
    results: dict[str, Any] = {
        "python": sys.version.split()[0],
        "rounds": rounds,
        "loop": loop_result,
        "us_per_step": {
            name: {n: med(f"{name}-{n}") for n in LENGTHS} for name in ("memory", "sqlite")
        },
        "sqlite_commit_us": med("commit"),
        "langgraph_us_per_step": med("langgraph") if lg else None,
        "ratios": {
            "memory_growth_1000_vs_10": med_ratio("memory-1000", "memory-10"),
            "sqlite_growth_1000_vs_10": med_ratio("sqlite-1000", "sqlite-10"),
            "sqlite_step_vs_commit": med_ratio("sqlite-1000", "commit"),
            "sqlite_sync_tool_step_vs_commit": med_ratio("sqlite-sync-tool", "commit"),
            "langgraph_vs_sqlite_step": med_ratio("langgraph", "sqlite-1000") if lg else None,
        },
    }
    ratios = results["ratios"]
    table = Table(
        title=f"Per-step overhead, median of {args.rounds} interleaved rounds "
        "(instant model, no rendering)"
    )
    table.add_column("store")
    for length in LENGTHS:
        table.add_column(f"{length} events\nus/step", justify="right")
    table.add_column("1000 / 10", justify="right")
    table.add_column("step / SQLite\ncommit", justify="right")
    for name in ("memory", "sqlite"):
        row_us = results["us_per_step"][name]
        table.add_row(
            name,
            *(f"{row_us[n]:.1f}" for n in LENGTHS),
            f"{ratios[f'{name}_growth_1000_vs_10']:.2f}",
            f"{ratios['sqlite_step_vs_commit']:.2f}x" if name == "sqlite" else "-",
        )
    console.print(table)
    console.print(f"SQLite durable commit (WAL, synchronous=FULL): {med('commit'):.1f} us")
    console.print(
        f"SQLite step with a sync tool (run in a worker thread), 1000 events: "
        f"{med('sqlite-sync-tool'):.1f} us ({med_ratio('sqlite-sync-tool', 'commit'):.2f}x commit)"
    )
    if not lg:
        console.print("LangGraph: not installed (make bench installs it)")
    else:
        console.print(
            f"LangGraph checkpointed loop (SqliteSaver, durability=sync): {med('langgraph'):.1f} "
            f"us/step; Threadline's SQLite step is {ratios['langgraph_vs_sqlite_step']:.1f}x "
            "cheaper"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
