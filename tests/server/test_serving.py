"""A graceful shutdown with a browser connected (docs/server.md, "Background execution and
shutdown"), on a real uvicorn on loopback: the server as `threadline serve` runs it
(`GracefulServer`), told to exit in code as SIGTERM tells it.

Under a plain `uvicorn.Server` the open event stream held the shutdown: uvicorn waits for
every connection to finish before the app's lifespan learns of the shutdown, and a live
stream never finishes (`LiveServer.stop()` gave up after 30 s, the server still running).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from server_support import DEFAULT_KEYS, SECRET, start_server
from threadline import Agent
from threadline.models.base import Context
from threadline.server import ServerConfig
from threadline.testing import FunctionModel, intent

STOPPED_WITHIN = 15.0
"""Seconds a shutdown may take here, the held step finishing included: a generous bound
for a loaded machine (a correctness bound: the stream used to hold it forever)."""


def test_a_shutdown_ends_open_streams_at_once_and_lets_requests_in_flight_finish(
    tmp_path: Path,
) -> None:
    calling = threading.Event()
    hold = threading.Event()

    async def answer(context: Context) -> Any:
        calling.set()
        if not await asyncio.to_thread(hold.wait, 60):
            raise AssertionError("the test never released the model")
        return intent("done_for_now", message="finished while the server stopped")

    agent = Agent(name="slow", instructions="Answer.", model=FunctionModel(answer))
    # Streams re-read the store only every 60 s: ending sooner means they were woken.
    config = ServerConfig(webhook_secret=SECRET, poll_interval=60)
    live = start_server(tmp_path, [agent], None, config=config, keys=DEFAULT_KEYS)
    launched: list[httpx.Response] = []

    def launch() -> None:
        with live.client() as c:
            body = {"agent": "slow", "message": "go", "wait": True, "wait_timeout": 60}
            launched.append(c.post("/v1/threads", json=body, timeout=90))

    launcher = threading.Thread(target=launch, daemon=True)
    launcher.start()
    assert calling.wait(30), "the model was never called"
    with live.client() as c:
        thread_id = c.get("/v1/threads").json()["items"][0]["id"]

    lines: list[str] = []
    ended: list[str] = []
    connected = threading.Event()

    def listen() -> None:
        try:
            with (
                live.client() as c,
                c.stream("GET", f"/v1/threads/{thread_id}/events/stream", timeout=90) as r,
            ):
                for line in r.iter_lines():
                    lines.append(line)
                    if line == "event: user_message":  # the thread's one event so far
                        connected.set()
            ended.append("cleanly")
        except httpx.HTTPError as exc:
            ended.append(f"with {exc!r}")

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert connected.wait(30), "the stream never opened"

    started = time.monotonic()
    stopped: list[bool] = []
    stopper = threading.Thread(target=lambda: stopped.append(live.stop(timeout=60)))
    stopper.start()
    # The stream and the waiting launch end without waiting for the step in flight...
    listener.join(STOPPED_WITHIN)
    launcher.join(STOPPED_WITHIN)
    assert ended == ["cleanly"]
    assert lines[0] == ": connected" and "event: user_message" in lines
    assert [r.status_code for r in launched] == [201]
    assert launched[0].json()["status"] == "running"
    # ...which is let finish and is checkpointed before the server stops.
    hold.set()
    stopper.join(60)
    elapsed = time.monotonic() - started
    assert stopped == [True]
    assert elapsed < STOPPED_WITHIN, f"the shutdown took {elapsed:.1f} s"
    # The held model call's answer was checkpointed (the run loop then stopped).
    last = json.loads(live.stored_events(thread_id)[-1][1])
    assert last["kind"] == "tool_call" and last["tool"] == "done_for_now", last
