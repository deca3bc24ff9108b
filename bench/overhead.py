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

Run: python bench/overhead.py [--threads 40] [--json results.json]
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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypedDict

from rich.console import Console
from rich.table import Table

from threadline import Agent, MemoryStore, Runtime, SQLiteStore, Store, Thread, decide, tool
from threadline.events import ModelCall, ToolCall, ToolResult, UserMessage
from threadline.models.base import Context, Message, ModelOutput
from threadline.reducer import Wait

LENGTHS = (10, 100, 1000)
console = Console()


@tool
def lookup(key: str) -> str:
    """Read-only lookup."""
    return key.upper()


ANSWER = ModelOutput(text='{"intent": "lookup", "arguments": {"key": "abc"}}', model="instant")
CONTEXT = Context(system="bench", messages=(Message("user", "go"),))


class InstantModel:
    model_id = "instant"

    async def request(self, context: Context) -> ModelOutput:
        return ANSWER


AGENT = Agent(
    "bench",
    tools=[lookup],
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


async def per_step_us(store: Store, length: int, threads: int, steps: int = 4) -> float:
    """Mean microseconds per step over `threads` threads, `steps` steps each."""
    rt = Runtime(store, agents=[AGENT])
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
            step = decide(AGENT, thread)
            if isinstance(step, Wait):
                raise RuntimeError(f"bench thread stopped: {thread.status}")
            thread = await rt.perform(AGENT, thread, step)
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


def best_of(runs: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=40, help="threads per length")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results: dict[str, Any] = {"python": sys.version.split()[0], "us_per_step": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        commit = best_of(3, lambda: sqlite_commit_us(tmpdir / "baseline.db"))
        for name in ("memory", "sqlite"):
            row = {}
            for length in LENGTHS:

                def measure() -> float:
                    async def go() -> float:
                        store: Store = (
                            MemoryStore()
                            if name == "memory"
                            else SQLiteStore(tmpdir / f"{name}-{length}-{time.monotonic_ns()}.db")
                        )
                        try:
                            return await per_step_us(store, length, args.threads)
                        finally:
                            await store.close()

                    return asyncio.run(go())

                row[length] = best_of(3, measure)
                console.print(f"  {name:<6} length {length:>5}: {row[length]:8.1f} us/step")
            results["us_per_step"][name] = row
        lg = langgraph_step_us(tmpdir / "langgraph.db")
    results["sqlite_commit_us"] = commit
    results["langgraph_us_per_step"] = lg

    table = Table(title="Per-step runtime overhead (instant model, no rendering)")
    table.add_column("store")
    for length in LENGTHS:
        table.add_column(f"{length} events\nus/step", justify="right")
    table.add_column("1000 / 10", justify="right")
    table.add_column("vs SQLite commit", justify="right")
    for name, row in results["us_per_step"].items():
        growth = row[1000] / row[10]
        vs = f"{row[1000] / commit:.2f}x" if name == "sqlite" else "-"
        table.add_row(name, *(f"{row[n]:.1f}" for n in LENGTHS), f"{growth:.2f}", vs)
    console.print(table)
    console.print(f"SQLite durable commit baseline: {commit:.1f} us")
    sqlite_step = results["us_per_step"]["sqlite"][1000]
    if lg is None:
        console.print("LangGraph: not installed (make bench installs it)")
    else:
        console.print(
            f"LangGraph checkpointed loop (SqliteSaver, durability=sync): "
            f"{lg:.1f} us/step -> Threadline SQLite step is {lg / sqlite_step:.1f}x "
            "cheaper"
        )
    results["ratios"] = {
        "memory_growth_1000_vs_10": results["us_per_step"]["memory"][1000]
        / results["us_per_step"]["memory"][10],
        "sqlite_growth_1000_vs_10": sqlite_step / results["us_per_step"]["sqlite"][10],
        "sqlite_step_vs_commit": sqlite_step / commit,
        "langgraph_vs_sqlite_step": (lg / sqlite_step) if lg else None,
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
