"""Live event streams and waits: Server-Sent Events fed from the store.

The store is the only source of truth: a stream reads `events(after=last)` and sends what
it finds, so it can never skip or duplicate an event, and a client reconnecting with
`Last-Event-ID` (or `?after=`) resumes exactly where it stopped. `ChangeFeed` (a runtime
observer) wakes streams and waits the moment this process appends; a short poll covers
appends made by other processes (workers on the same database).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence

from ..errors import CorruptEvent, ThreadNotFound
from ..events import Event, Status, Thread
from ..stores.base import Store
from ..wire import event_json

__all__ = ["ChangeFeed", "event_stream", "format_sse", "wait_until_settled"]

KEEPALIVE = 15.0
"""Seconds of silence after which a stream sends a comment line (proxies drop idle streams)."""


class ChangeFeed:
    """Wakes whoever watches a thread when this process appends to it (a runtime observer)."""

    def __init__(self) -> None:
        self._signals: dict[str, asyncio.Event] = {}

    def __call__(self, thread: Thread, events: Sequence[Event]) -> None:
        signal = self._signals.pop(thread.id, None)
        if signal is not None:
            signal.set()

    def watch(self, thread_id: str) -> asyncio.Event:
        """An event set at the next append to `thread_id`. Take it *before* reading the store,
        so an append between the read and the wait is not missed."""
        signal = self._signals.get(thread_id)
        if signal is None:
            signal = self._signals[thread_id] = asyncio.Event()
        return signal

    def wake_all(self) -> None:
        for signal in self._signals.values():
            signal.set()
        self._signals.clear()


async def _sleep_on(signal: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(signal.wait(), seconds)
        return True
    except TimeoutError:
        return False


def format_sse(event: Event) -> bytes:
    """One SSE message: `id` is the seq (for Last-Event-ID), `event` the kind, `data` the
    event as the API sends it (with its `summary`, see `threadline.wire.event_json`)."""
    data = json.dumps(event_json(event), separators=(",", ":"))
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n".encode()


async def event_stream(
    store: Store,
    feed: ChangeFeed,
    thread_id: str,
    after: int,
    *,
    poll: float,
    closing: Callable[[], bool],
) -> AsyncIterator[bytes]:
    """Every event with seq > `after`, then each new one as it is appended, until `closing()`."""
    last = after
    idle = 0.0
    yield b": connected\n\n"
    while not closing():
        signal = feed.watch(thread_id)
        try:
            events = await store.events(thread_id, after=last, limit=500)
        except ThreadNotFound:  # deleted while watched (retention): the stream just ends
            return
        except CorruptEvent as exc:  # damaged while watched: say so, then end the stream
            data = json.dumps({"thread_id": exc.thread_id, "seq": exc.seq, "detail": str(exc)})
            yield f"event: error\ndata: {data}\n\n".encode()
            return
        for event in events:
            yield format_sse(event)
            last = event.seq
        if events:
            idle = 0.0
            continue
        if not await _sleep_on(signal, poll):
            idle += poll
            if idle >= KEEPALIVE:
                idle = 0.0
                yield b": keep-alive\n\n"


async def wait_until_settled(
    store: Store,
    feed: ChangeFeed,
    thread_id: str,
    *,
    within: float,
    poll: float,
    closing: Callable[[], bool],
) -> None:
    """Return once the thread is no longer `running` (or after `within` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not closing():
        signal = feed.watch(thread_id)
        summary = await store.get(thread_id)
        if summary.status != Status.RUNNING:
            return
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        await _sleep_on(signal, min(poll, remaining))
