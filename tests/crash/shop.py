"""The agent the crash tests run in worker processes: a shop that looks up, charges and
sends a receipt. Every tool execution is recorded in a side table (`executions`) in the
same PostgreSQL database, by the worker process that ran it.

    lookup        read-only          (may simply re-run)
    charge        side effects, NOT idempotent   (must never run twice: escalates instead)
    send_receipt  side effects, idempotent       (re-runs must carry the same key)
    hold          side effects, idempotent; sleeps HOLD_SECONDS (the lease-safety test)

The model is a `FunctionModel` deciding from which tool results the thread already has,
so the run is fast and deterministic. Configuration comes from the environment the test
supervisor sets: CRASH_DB_URL (libpq URL) and CRASH_SCHEMA.
"""

from __future__ import annotations

import asyncio
import json
import os
import random

from threadline import Agent, tool
from threadline.events import Thread
from threadline.models.base import Context, Message
from threadline.testing import FunctionModel, intent
from threadline.tools import ToolContext

SIDE_TABLE = """
CREATE TABLE IF NOT EXISTS executions (
    id BIGSERIAL PRIMARY KEY,
    thread_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""

_pool = None


async def _record(tool_name: str, ctx: ToolContext) -> None:
    """Insert one execution row (committed before the tool returns)."""
    global _pool
    if _pool is None:
        from psycopg_pool import AsyncConnectionPool

        schema = os.environ["CRASH_SCHEMA"]

        async def configure(conn):  # type: ignore[no-untyped-def]
            await conn.execute(f'SET search_path TO "{schema}"')

        _pool = AsyncConnectionPool(
            os.environ["CRASH_DB_URL"],
            min_size=1,
            max_size=4,
            kwargs={"autocommit": True},
            configure=configure,
            # a connection the PostgreSQL restart killed is replaced, not handed to the tool
            check=AsyncConnectionPool.check_connection,
            open=False,
        )
        await _pool.open()
    async with _pool.connection() as conn:
        await conn.execute(
            "INSERT INTO executions (thread_id, call_id, tool, idempotency_key, attempt, pid) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (ctx.thread_id, ctx.call_id, tool_name, ctx.idempotency_key, ctx.attempt, os.getpid()),
        )


async def _jitter() -> None:
    # Widens the window between tool_started and the outcome, so kills land inside it.
    await asyncio.sleep(random.uniform(0.0, 0.03))


@tool
async def lookup(order: str, ctx: ToolContext) -> dict[str, object]:
    """Look an order up (read-only)."""
    await _record("lookup", ctx)
    return {"order": order, "amount": 42}


@tool(side_effects=True, idempotent=False)
async def charge(order: str, amount: int, ctx: ToolContext) -> str:
    """Charge the customer's card (not idempotent: never run twice)."""
    await _jitter()
    await _record("charge", ctx)
    await _jitter()
    return f"charged {amount}"


@tool(side_effects=True, idempotent=True)
async def send_receipt(order: str, ctx: ToolContext) -> str:
    """Email the receipt (idempotent: the mail service dedupes on the key)."""
    await _jitter()
    await _record("send_receipt", ctx)
    await _jitter()
    return "sent"


@tool(side_effects=True, idempotent=True, timeout=120)
async def hold(ctx: ToolContext) -> str:
    """Record, then take a while (the lease-safety test freezes the worker here)."""
    await _record("hold", ctx)
    await asyncio.sleep(float(os.environ.get("HOLD_SECONDS", "3")))
    return "held"


def outline(agent: Agent, thread: Thread) -> Context:
    """One line per event: enough for the scripted model, and cheap."""
    lines = []
    for e in thread.events:
        if e.kind == "tool_result":
            lines.append(f"{e.tool}_result {json.dumps(e.result)}")
        elif e.kind == "user_message":
            lines.append(f"user {e.text}")
        else:
            lines.append(e.kind)
    return Context(system="", messages=(Message("user", "\n".join(lines)),))


def next_intent(context: Context) -> object:
    text = context.as_text()
    order = "o-1"
    if "user hold" in text:
        if "hold_result" in text:
            return intent("done_for_now", message="held")
        return intent("hold")
    if "lookup_result" not in text:
        return intent("lookup", order=order)
    if "charge_result" not in text:
        return intent("charge", order=order, amount=42)
    if "send_receipt_result" not in text:
        return intent("send_receipt", order=order)
    return intent("done_for_now", message="charged and receipted")


agent = Agent(
    "shop",
    tools=[lookup, charge, send_receipt, hold],
    model=FunctionModel(next_intent),
    renderer=outline,
    max_steps=10,
)
