"""Writes from another process landing at a chosen moment, on the real stores: the
SQLite file and the PostgreSQL schema are opened twice, as two processes would."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pg_support import pg_store_url
from threadline import Agent, Model, Runtime, Thread
from threadline.stores import Store, open_store
from threadline.stores.base import Append

__all__ = ["STORES", "Held", "InFlight", "advance_held", "land_before", "store_url"]

STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
"""The kinds of store these races run on (a `params` list for a fixture)."""


def store_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh SQLite file or PostgreSQL schema, for `open_store`."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'threads.db'}"
    base = request.getfixturevalue("postgres_url")
    return pg_store_url(base, request.getfixturevalue("pg_schema"))


def land_before(store: Store, kind: str, write: Callable[[], Awaitable[object]]) -> list[bool]:
    """Run `write` (another process's action) just before the first append to `store` that
    holds an event of `kind`, then let that append go on. Returns a list that holds True
    once `write` ran."""
    real = store._append
    landed: list[bool] = []

    async def _append(append: Append) -> Awaitable[None] | None:
        if not landed and any(e.kind == kind for e in append[1]):
            landed.append(True)
            await write()
        return await real(append)

    store._append = _append  # type: ignore[method-assign]
    return landed


@dataclass
class Held:
    """A step held in flight: the model or tool under test awaits `hold()`, which tells
    `entered` and returns once the test calls `release()`."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    _gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def hold(self) -> None:
        self.entered.set()
        await self._gate.wait()

    def release(self) -> None:
        self._gate.set()


@dataclass
class InFlight:
    """`rt`'s advance of a thread (`running`), held at a step, and `other`, a second
    process on the same store."""

    rt: Runtime
    other: Runtime
    thread_id: str
    running: asyncio.Task[Thread]

    async def close(self) -> None:
        await self.other.store.close()
        await self.rt.store.close()


async def advance_held(
    url: str, agent: Agent, model: Model, held: Held, *, other_model: Model | None = None
) -> InFlight:
    """Launch a thread of `agent` at `url` and advance it in a task until it reaches
    `held` (which its model or one of its tools awaits)."""
    rt = Runtime(open_store(url), agents=[agent], model=model)
    other = Runtime(open_store(url), agents=[agent], model=other_model)
    thread = await rt.launch(agent, "go", advance=False)
    running = asyncio.create_task(rt.advance(thread.id))
    await held.entered.wait()
    return InFlight(rt, other, thread.id, running)
