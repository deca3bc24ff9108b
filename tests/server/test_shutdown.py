"""The app under plain `uvicorn module:app` (no `GracefulServer`), in its own process on
loopback, sent SIGTERM with an event stream open: the stream ends and the process exits.

Before, uvicorn waited for every connection to finish before the app's lifespan heard of
the shutdown, and a live stream never finishes: the process never exited
(`timeout_graceful_shutdown` is unset by default). `threadline serve` is tested the same
way in tests/cli/test_serve.py, and `GracefulServer` in tests/server/test_serving.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import httpx

from server_support import CALC, free_port
from threadline.server.shutdown import shutdown_on_signals

STOPPED_WITHIN = 15.0
"""Seconds the stream and the process may take to end after SIGTERM: a generous bound for a
loaded machine (a correctness bound: the stream used to hold the process forever)."""

PLAIN_APP = """
from threadline import Runtime, load_agent
from threadline.server import ServerConfig, Services, create_app
from threadline.stores import SQLiteStore
from threadline.testing import ScriptedModel, intent

agent = load_agent({calc!r})
model = ScriptedModel([intent("divide", a=9, b=3)])
services = Services.build(
    ServerConfig(auth=False),
    lambda observers: Runtime(
        SQLiteStore("threads.db"), agents=[agent], model=model, observers=observers
    ),
)
app = create_app(services)
"""


def test_plain_uvicorn_ends_open_streams_on_sigterm_and_exits(tmp_path: Path) -> None:
    """The app as docs/server.md declares it, run with `uvicorn plainapp:app`."""
    (tmp_path / "plainapp.py").write_text(PLAIN_APP.format(calc=f"{CALC}:agent"))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "plainapp:app", "--port", str(port)],
        cwd=tmp_path,
        env={**os.environ, "THREADLINE_LOG": "off"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not _ready(base):
            assert proc.poll() is None and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.1)
        body = {"agent": "calculator", "message": "9 / 3", "wait": True}
        thread = httpx.post(f"{base}/v1/threads", json=body, timeout=60).json()
        assert thread["status"] == "awaiting_approval", thread
        url = f"{base}/v1/threads/{thread['id']}/events/stream"
        rest: list[str] = []
        with httpx.stream("GET", url, timeout=60) as stream:
            lines = stream.iter_lines()
            for line in lines:  # up to the thread's last event: the stream then only waits
                if line == "event: approval_requested":
                    break
            proc.send_signal(signal.SIGTERM)
            reader = threading.Thread(target=lambda: rest.extend([*lines, "(ended)"]))
            reader.start()  # ends cleanly (an abrupt close raises there: no "(ended)")
            reader.join(STOPPED_WITHIN)
            assert rest[-1:] == ["(ended)"], "the stream held on after SIGTERM"
        assert rest[0].startswith("data: ") and not any(x.startswith("event:") for x in rest)
        # uvicorn exits by the signal it was sent once it has shut down (0 if it clears it).
        assert proc.wait(timeout=STOPPED_WITHIN) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_signal_begins_the_shutdown_then_reaches_the_servers_handler() -> None:
    """A real SIGTERM to this process: `begin` runs on the loop and the handler installed
    before still gets the signal; an ignored SIGINT stays ignored; both are as they were
    once the block ends."""
    heard: list[str] = []

    def servers(sig: int, frame: FrameType | None) -> None:
        heard.append(f"server {signal.Signals(sig).name}")

    async def run() -> None:
        with shutdown_on_signals(lambda: heard.append("begin")):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):
                if "begin" in heard:
                    break
                await asyncio.sleep(0.01)

    before = signal.signal(signal.SIGTERM, servers), signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        asyncio.run(run())
        assert heard == ["server SIGTERM", "begin"]
        assert signal.getsignal(signal.SIGTERM) is servers
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
