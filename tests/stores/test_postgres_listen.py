"""Cancelling the LISTEN/NOTIFY wait on real PostgreSQL: a worker shutting down stops at
once, even when the driver swallows the cancellation mid-wait (psycopg#1371: the wait on
a connection goes on, and an `await` of it never sees the `CancelledError`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pg_support import pg_store_url
from threadline import Agent, Runtime
from threadline.stores import open_store
from threadline.stores.postgres import PostgresStore
from threadline.testing import FunctionModel, intent
from threadline.worker import Worker

pytestmark = pytest.mark.postgres


def _swallow_cancellation(store: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the store's LISTEN connection lose a cancellation that arrives mid-wait, as
    psycopg does when the server stops answering: the wait carries on to its timeout."""
    listener = store._listener
    assert listener is not None, "open the LISTEN connection first"
    real = listener.notifies

    def notifies(*, timeout: float | None = None, stop_after: int | None = None) -> Any:
        async def waiting() -> AsyncIterator[Any]:
            try:
                async for notify in real(timeout=timeout, stop_after=stop_after):
                    yield notify
            except asyncio.CancelledError:
                await asyncio.sleep(timeout or 60)  # the cancellation is lost here

        return waiting()

    monkeypatch.setattr(listener, "notifies", notifies)


async def test_a_cancelled_wait_ends_at_once_even_if_the_driver_swallows_it(
    postgres_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(pg_store_url(postgres_url, pg_schema))
    assert isinstance(store, PostgresStore)
    try:
        await store.wait_for_work(0.01)  # opens the LISTEN connection
        _swallow_cancellation(store, monkeypatch)
        waiting = asyncio.create_task(store.wait_for_work(60))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        waiting.cancel()
        await asyncio.wait({waiting}, timeout=10)
        assert waiting.cancelled(), "the cancelled wait went on"
    finally:
        await store.close()


async def test_a_worker_stops_promptly_while_it_waits_for_a_notify(
    postgres_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(pg_store_url(postgres_url, pg_schema))
    assert isinstance(store, PostgresStore)
    agent = Agent("idle", model=FunctionModel(lambda _: intent("done_for_now", message="ok")))
    runtime = Runtime(store, agents=[agent])
    # Idle with nothing to do: the worker waits up to a minute for a NOTIFY between polls.
    worker = Worker(runtime, poll_interval=60, schedules=False)
    try:
        await store.wait_for_work(0.01)
        _swallow_cancellation(store, monkeypatch)
        running = asyncio.create_task(worker.run())
        await asyncio.sleep(1.0)  # started, found nothing to do, waiting for a NOTIFY
        assert not running.done(), running
        worker.stop()  # SIGTERM: the worker cancels its LISTEN wait on the way out
        await asyncio.wait({running}, timeout=10)
        assert running.done(), "the worker did not stop within 10 s of a 60 s wait"
        assert running.result().leased == 0
    finally:
        await store.close()


async def test_the_wait_that_opens_listen_returns_at_once_so_no_early_notify_is_lost(
    postgres_url: str, pg_schema: str
) -> None:
    # A NOTIFY sent before LISTEN took effect reached nobody (a launch while a worker was
    # starting, or while its listener was down): the wait that (re)opens the connection
    # returns as soon as LISTEN holds, so the worker leases once more instead of waiting a
    # whole poll interval for work that is already there.
    url = pg_store_url(postgres_url, pg_schema)
    store, other = open_store(url), open_store(url)
    assert isinstance(store, PostgresStore)
    agent = Agent("idle", model=FunctionModel(lambda _: intent("done_for_now", message="ok")))
    try:
        await asyncio.wait_for(store.wait_for_work(60), 10)  # opens LISTEN, returns at once
        waiting = asyncio.create_task(store.wait_for_work(60))
        await asyncio.sleep(0.3)
        assert not waiting.done(), "a wait on an open listener returned with nothing sent"
        await Runtime(other, agents=[agent]).launch(agent, "wake", advance=False)
        await asyncio.wait_for(waiting, 10)  # the launch's NOTIFY
        assert store._listener is not None
        await store._listener.close()  # the listener breaks
        await asyncio.wait_for(store.wait_for_work(60), 10)  # reopens LISTEN, returns at once
        assert store._listener is not None and not store._listener.closed
    finally:
        await store.close()
        await other.close()
