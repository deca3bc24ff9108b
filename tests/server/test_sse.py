"""server/sse.py: event streams read the store only (a real SQLite store), resume after any
seq, wake on this process's appends, and end cleanly on a deleted or damaged thread."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from threadline.events import Done, Paused, Thread, UserMessage, utcnow
from threadline.server.sse import ChangeFeed, event_stream, format_sse, wait_until_settled
from threadline.stores import SQLiteStore


def _messages(chunks: list[bytes]) -> list[dict[str, str]]:
    """The SSE messages among `chunks` (comment lines dropped), as field -> value."""
    out = []
    for chunk in chunks:
        fields = dict(
            line.split(": ", 1) for line in chunk.decode().splitlines() if line[:1] not in ("", ":")
        )
        if fields:
            out.append(fields)
    return out


async def _store(tmp_path: Path) -> tuple[SQLiteStore, Thread]:
    store = SQLiteStore(tmp_path / "s.db")
    thread = Thread("th_sse", "a", [UserMessage(seq=0, at=utcnow(), text="hi")])
    await store.create(thread)
    return store, thread


def test_one_message_per_event_with_its_seq_kind_and_wire_form() -> None:
    event = Paused(seq=3, at=utcnow(), by="ops", reason="audit")
    (message,) = _messages([format_sse(event)])
    assert message["id"] == "3" and message["event"] == "paused"
    data = json.loads(message["data"])
    assert (data["seq"], data["kind"], data["by"]) == (3, "paused", "ops")
    assert data["summary"]["text"]  # as the API sends events: with their summary
    assert format_sse(event).endswith(b"\n\n")


async def test_a_stream_resumes_after_a_seq_and_wakes_on_appends(tmp_path: Path) -> None:
    store, thread = await _store(tmp_path)
    feed = ChangeFeed()
    stop = False
    got: list[bytes] = []
    stream: AsyncIterator[bytes] = event_stream(
        store, feed, thread.id, -1, poll=30, closing=lambda: stop
    )
    got.append(await anext(stream))  # ": connected"
    got.append(await anext(stream))  # event 0
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.05)
    assert not pending.done()  # nothing new: it waits (poll is 30 s)
    thread.append(Paused(seq=1, at=utcnow()))
    await store.append(thread.id, thread.events[1:], expected_seq=1)
    feed(thread, thread.events[1:])  # this process appended: wake the stream now
    got.append(await asyncio.wait_for(pending, 5))
    stop = True
    assert [m["id"] for m in _messages(got)] == ["0", "1"]
    resumed = event_stream(store, feed, thread.id, 0, poll=30, closing=lambda: False)
    assert await anext(resumed) == b": connected\n\n"
    assert _messages([await anext(resumed)])[0]["id"] == "1"  # Last-Event-ID 0: from seq 1
    await store.close()


async def test_a_deleted_thread_ends_the_stream_and_a_damaged_one_says_so(
    tmp_path: Path,
) -> None:
    store, thread = await _store(tmp_path)
    feed = ChangeFeed()
    await store.delete(thread.id)
    ended = [c async for c in event_stream(store, feed, thread.id, -1, poll=1, closing=bool)]
    assert ended == [b": connected\n\n"]
    other = Thread("th_bad", "a", [UserMessage(seq=0, at=utcnow(), text="x")])
    await store.create(other)
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute("UPDATE events SET body = '{broken' WHERE thread_id = 'th_bad'")
    chunks = [c async for c in event_stream(store, feed, other.id, -1, poll=1, closing=bool)]
    (error,) = _messages(chunks)
    assert error["event"] == "error"
    assert json.loads(error["data"])["seq"] == 0
    await store.close()


async def test_waiting_returns_when_the_thread_settles_or_the_time_is_up(tmp_path: Path) -> None:
    store, thread = await _store(tmp_path)  # a thread with only a user message is running
    feed = ChangeFeed()
    await wait_until_settled(store, feed, thread.id, within=0.2, poll=0.05, closing=bool)
    assert (await store.get(thread.id)).status.value == "running"  # it gave up waiting
    waiting = asyncio.ensure_future(
        wait_until_settled(store, feed, thread.id, within=30, poll=30, closing=bool)
    )
    await asyncio.sleep(0.05)
    thread.append(Done(seq=1, at=utcnow(), message="ok"))
    await store.append(thread.id, thread.events[1:], expected_seq=1)
    feed(thread, thread.events[1:])
    await asyncio.wait_for(waiting, 5)  # woken by the append, not by the 30 s poll
    feed.watch("th_other")
    feed.wake_all()  # shutting down: every watcher wakes
    await store.close()
