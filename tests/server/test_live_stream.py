"""A thread's live event stream while its turns are pipelined (docs/core.md, "Pipelining"),
on a real uvicorn on loopback, a real SQLite file at synchronous=FULL and a model that takes
its time: a turn's commit goes behind the next model call, and people pause and resume the
thread while that call is still running.

The server polls the store only every 60 s here, so what reaches the stream sooner was
woken by the runtime's observers (`ChangeFeed`): the stream hearing of an event within the
waits below means the observers heard of it as soon as it was durable, not at the next
model call's end, nor at the next join, nor at the next poll.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server_support import DEFAULT_KEYS, SECRET, LiveServer, start_server
from threadline import Agent, tool
from threadline.models.base import Context
from threadline.server import ServerConfig
from threadline.testing import FunctionModel, intent

WAIT = 30.0
"""Seconds to wait for the stream to show an event: half the poll interval, so only an
observer can have woken it in time (a bound on a wait, not a timing assertion)."""


@tool
def look(key: str) -> str:
    """Read-only: a turn calling it is held and, a model call following, pipelined."""
    return key.upper()


class SlowModel:
    """The thread's model: a lookup, then a second lookup held until the test releases it
    (the test acts on the thread meanwhile), then the final answer.

    The second call starts as soon as the first turn's append returned, its `COMMIT` often
    still on its way to disk: right then, on the server's loop, it pauses and resumes the
    thread as a request handler would (`committing` records whether the commit was still
    in flight, by the store's count of commits behind the loop)."""

    def __init__(self) -> None:
        self.runtime: Any = None
        self.thread_id = ""
        self.launched = threading.Event()
        self.in_flight = threading.Event()  # the held call has started
        self.release = threading.Event()
        self.committing: list[bool] = []

    async def answer(self, context: Context) -> Any:
        call = context.model_calls
        if call == 0:
            if not await asyncio.to_thread(self.launched.wait, WAIT):
                raise AssertionError("the test never said which thread it launched")
            return intent("look", key="a")
        if call == 1:
            # The launch's create and the first turn's COMMIT are counted once each returned
            # (the create did, during the first call): fewer than two, the turn's is in flight.
            self.committing.append(self.runtime.store.stats.behind < 2)
            await self.runtime.pause(self.thread_id, by="ops")
            await self.runtime.resume(self.thread_id, by="ops")
            self.in_flight.set()
            if not await asyncio.to_thread(self.release.wait, 2 * WAIT):
                raise AssertionError("the test never released the model")
            return intent("look", key="b")
        return intent("done_for_now", message="looked twice")


class Listener:
    """An SSE client on its own thread: every message's seq and kind, in arrival order."""

    def __init__(self, server: LiveServer, thread_id: str, after: int) -> None:
        self.seen: list[tuple[int, str]] = []
        self._changed = threading.Condition()
        self._url = f"{server.url}/v1/threads/{thread_id}/events/stream"
        self._headers = {
            "Authorization": f"Bearer {server.keys['admin']}",
            "Accept": "text/event-stream",
            "Last-Event-ID": str(after),
        }
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with (
            httpx.Client(timeout=None) as client,
            client.stream("GET", self._url, headers=self._headers) as resp,
        ):
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    data = json.loads(line[6:])
                    with self._changed:
                        self.seen.append((data["seq"], data["kind"]))
                        self._changed.notify_all()
                    if data["kind"] == "done":  # the last: hang up (the server waits)
                        return

    def wait_for(self, kind: str, count: int = 1) -> bool:
        """Whether `count` events of `kind` arrived within `WAIT` seconds."""
        with self._changed:
            return self._changed.wait_for(
                lambda: sum(k == kind for _, k in self.seen) >= count, WAIT
            )


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[tuple[LiveServer, SlowModel]]:
    model = SlowModel()
    agent = Agent("looker", tools=[look], model=FunctionModel(model.answer, model_id="slow"))
    config = ServerConfig(webhook_secret=SECRET, poll_interval=60)
    server = start_server(tmp_path, [agent], None, config=config, keys=DEFAULT_KEYS)
    model.runtime = server.runtime
    yield server, model
    model.release.set()
    server.stop()


def test_a_pipelined_turn_and_a_pause_and_resume_during_the_next_call_reach_the_stream_at_once(
    slow: tuple[LiveServer, SlowModel],
) -> None:
    server, model = slow
    with server.client() as c:
        launched = c.post("/v1/threads", json={"agent": "looker", "message": "look twice"})
    assert launched.status_code == 201, launched.text
    model.thread_id = thread_id = launched.json()["id"]
    model.launched.set()
    assert model.in_flight.wait(WAIT)
    # Subscribed after the first event, the first turn (model_call, tool_call, tool_result)
    # committed behind the second model call, which is running: the stream sends the turn
    # (it resumes after the Last-Event-ID) and the pause and resume appended meanwhile.
    listener = Listener(server, thread_id, after=0)
    assert listener.wait_for("resumed"), listener.seen
    store = server.runtime.store
    assert store.stats.behind == 2  # the create's and the first turn's commits went behind
    # Request handlers pause and resume it while its loop is still in that model call (the
    # pipelined turn not yet joined): each reaches the stream before the model answers.
    with server.client() as c:
        assert c.post(f"/v1/threads/{thread_id}/pause").status_code == 200
        assert listener.wait_for("paused", 2), listener.seen
        assert c.post(f"/v1/threads/{thread_id}/resume").status_code == 200
        assert listener.wait_for("resumed", 2), listener.seen
    assert not model.release.is_set()
    model.release.set()  # the answer re-bases over the pauses and resumes, and goes on
    assert listener.wait_for("done"), listener.seen
    assert server.wait_status(thread_id, {"done"})["status"] == "done"
    stored = [(seq, json.loads(body)["kind"]) for seq, body in server.stored_events(thread_id)]
    assert listener.seen == stored[1:]  # every event after the first, once, in order
    kinds = [kind for _, kind in stored]
    assert kinds[:8] == [
        "user_message",
        "model_call",
        "tool_call",
        "tool_result",
        "paused",
        "resumed",
        "paused",
        "resumed",
    ]
    assert kinds[-1] == "done" and kinds.count("model_call") == 3
