"""The process tests/test_pipeline.py kills: threads advanced one after another on a SQLite
file (synchronous=FULL), their read-only turns' commits pipelined with the next model call.

    python pipeline_child.py DB EFFECTS

Prints `ready`, then a line per fact, flushed at once:
  * `flying THREAD SEQ`: an append at SEQ returned before its COMMIT did;
  * `landed THREAD SEQ`: that COMMIT returned (the runtime has seen it durable);
  * `ack THREAD SEQ KIND`: an observer was told of the event (only once it is durable).
`charge`, a tool with side effects, appends `THREAD CALL_ID STARTED` to EFFECTS (fsynced) when it
runs, STARTED being 1 if its `tool_started` was already committed, read through a
connection of its own.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Unpack

from threadline import Agent, Runtime, SQLiteStore, tool
from threadline.events import Event, Thread
from threadline.models.base import Context
from threadline.stores.dialect import Tx
from threadline.stores.sql import BehindOptions, Write
from threadline.testing import FunctionModel, intent
from threadline.tools import ToolContext

DB = sys.argv[1] if __name__ == "__main__" else ""
EFFECTS = sys.argv[2] if __name__ == "__main__" else ""
PLAN = ("lookup", "lookup", "charge", "lookup", "lookup", "done")
"""What the model asks for at its n-th call in a thread: so a resumed thread goes on."""


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@tool
def lookup(key: str) -> str:
    """Read-only."""
    return key.upper()


@tool(side_effects=True, idempotent=False)
def charge(amount: int, ctx: ToolContext) -> str:
    """Changes the world: a line in EFFECTS."""
    with sqlite3.connect(DB, timeout=10) as conn:
        started = conn.execute(
            "SELECT count(*) FROM events WHERE thread_id = ? AND kind = 'tool_started' "
            "AND json_extract(body, '$.call_id') = ?",
            (ctx.thread_id, ctx.call_id),
        ).fetchone()[0]
    with open(EFFECTS, "a") as effects:
        effects.write(f"{ctx.thread_id} {ctx.call_id} {started}\n")
        effects.flush()
        os.fsync(effects.fileno())
    return f"charged {amount}"


async def answer(context: Context) -> dict[str, Any]:
    await asyncio.sleep(0)  # yields once, as a network call would
    n = context.model_calls
    step = PLAN[n % len(PLAN)]
    if step == "done":
        return intent("done_for_now", message="all done")
    if step == "charge":
        return intent("charge", amount=n)
    return intent("lookup", key=f"k{n}")


def agent() -> Agent:
    return Agent("piped", tools=[lookup, charge], model=FunctionModel(answer), max_steps=50)


class Reporting(SQLiteStore):
    """Says when an append returns before its COMMIT, and when that COMMIT returned."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._expected: dict[str, int] = {}  # the seq of each thread's append under way

    def append_behind(
        self, thread_id: str, events: Sequence[Event], **options: Any
    ) -> Awaitable[Awaitable[None] | None]:
        self._expected[thread_id] = options["expected_seq"]
        return super().append_behind(thread_id, events, **options)

    async def run_behind(
        self, plan: Write, tx: Tx, *, append_to: str, **options: Unpack[BehindOptions]
    ) -> Awaitable[None] | None:
        seq = self._expected.pop(append_to, 0)  # none: the thread's create
        durable = await super().run_behind(plan, tx, append_to=append_to, **options)
        if durable is None:
            return None
        say(f"flying {append_to} {seq}")
        flying = durable

        async def landed() -> None:
            await flying
            say(f"landed {append_to} {seq}")

        return landed()


def slow_disk(store: SQLiteStore, seconds: float, then: Callable[[], None] | None = None) -> None:
    """Make `store`'s COMMITs behind the loop report `seconds` late, as a slow disk would
    (each has returned: what it wrote is durable; the store hears so later), so that the
    appends that follow queue; `then` runs once, on the committing thread, right after the
    first of them (another process acting in between)."""
    flush = store._behind._flush
    pending = [then] if then is not None else []

    def late(conn: sqlite3.Connection, began: threading.Lock, appends: int) -> None:
        flush(conn, began, appends)
        while pending:
            pending.pop()()
        time.sleep(seconds)

    store._behind._flush = late  # type: ignore[method-assign]


def acknowledge(thread: Thread, events: Sequence[Event]) -> None:
    for e in events:
        say(f"ack {thread.id} {e.seq} {e.kind}")


async def main() -> None:
    store = Reporting(DB)
    rt = Runtime(store, agents=[agent()], observers=[acknowledge])
    say("ready")
    while True:
        await rt.launch("piped", "go")


if __name__ == "__main__":
    asyncio.run(main())
