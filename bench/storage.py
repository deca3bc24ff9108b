"""Storage per turn: one thread of N model turns, each calling a tool that returns 1 KB.

Threadline: `Runtime.launch` on `SQLiteStore` (the events and the state projection; the
renderer is a constant here because rendering writes nothing to the store). LangGraph: the
same loop with `SqliteSaver`, which stores a checkpoint of the whole state after every
node. A figure is the database file's size once the store is closed (SQLite folds the WAL
back into the file when the last connection closes).
"""

from __future__ import annotations

import asyncio
import operator
import sqlite3
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

from threadline import Agent, Runtime, SQLiteStore, tool
from threadline.models.base import Context, Message, ModelOutput, ModelProfile

RESULT = "x" * 1024
CALL = '{"intent": "fetch", "arguments": {"key": "abc"}}'
DONE = '{"intent": "done_for_now", "arguments": {"message": "ok"}}'
CONSTANT = Context(system="bench", messages=(Message("user", "go"),))


@tool
async def fetch(key: str) -> str:
    """Read-only fetch of a 1 KB record."""
    return RESULT


class _Script:
    model_id = "instant"
    profile = ModelProfile()

    def __init__(self, turns: int) -> None:
        self.turns, self.n = turns, 0

    async def request(self, context: Context) -> ModelOutput:
        self.n += 1
        # A new key each turn: the same call repeated is refused as a loop (loop_guard).
        text = DONE if self.n >= self.turns else CALL.replace("abc", f"abc{self.n}")
        return ModelOutput(text=text, model="instant")


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def threadline_bytes(tmpdir: Path, turns: int) -> int:
    """Bytes of Threadline's SQLite file after one thread of `turns` turns."""
    path = tmpdir / f"tl-{turns}-{time.monotonic_ns()}.db"
    agent = Agent(
        "storage",
        tools=[fetch],
        model=_Script(turns),
        max_steps=turns + 5,
        renderer=lambda agent, thread: CONSTANT,
    )

    async def go() -> None:
        store = SQLiteStore(path)
        try:
            thread = await Runtime(store, agents=[agent]).launch(agent, "fetch abc")
            if thread.status != "done":
                raise RuntimeError(f"storage run ended {thread.status}")
        finally:
            await store.close()

    asyncio.run(go())
    return _size(path)


class _State(TypedDict):
    messages: Annotated[list[dict[str, Any]], operator.add]
    n: int


def langgraph_bytes(tmpdir: Path, turns: int) -> int | None:
    """Bytes of LangGraph's SqliteSaver file after the same run, or None if not installed."""
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.graph import END, START, StateGraph
    except ImportError:
        return None

    def model(state: _State) -> dict[str, Any]:
        n = state["n"] + 1
        return {
            "messages": [{"role": "assistant", "content": DONE if n >= turns else CALL}],
            "n": n,
        }

    def run_tool(state: _State) -> dict[str, Any]:
        return {"messages": [{"role": "tool", "content": RESULT}]}

    graph = StateGraph(_State)
    graph.add_node("model", model)
    graph.add_node("tool", run_tool)
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", lambda s: END if s["n"] >= turns else "tool")
    graph.add_edge("tool", "model")
    path = tmpdir / f"lg-{turns}-{time.monotonic_ns()}.db"
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    app = graph.compile(checkpointer=SqliteSaver(conn))
    config = {"configurable": {"thread_id": "t"}, "recursion_limit": turns * 2 + 10}
    app.invoke({"messages": [{"role": "user", "content": "go"}], "n": 0}, config)
    conn.close()
    return _size(path)


__all__ = ["langgraph_bytes", "threadline_bytes"]
