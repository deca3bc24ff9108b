"""A real uvicorn server on loopback, in a background thread, for every server test.

The server runs in its own thread and event loop, exactly as `threadline serve` runs it
(same app, same middleware, real sockets); tests talk to it over HTTP with httpx and read
the SQLite file directly to check what was (and was not) written.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from threadline import Agent, load_agent
from threadline.models.base import Context
from threadline.runtime import Runtime
from threadline.server import ServerConfig, Services, create_app
from threadline.server.auth import create_key
from threadline.server.serving import GracefulServer
from threadline.stores import SQLiteStore, key_store
from threadline.testing import FunctionModel, intent

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
"""Debian's chromium (Playwright's own browser download cannot work here)."""
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SECRET = "test-webhook-secret"
# How long a browser test waits for the page to show a thread's next state. A scripted
# thread settles in well under a second on an idle machine; 60 s leaves room for a CI
# machine shared by other work (a wait, not a timing assertion).
UI_WAIT_MS = 60_000
THREADLINE = str(Path(sys.executable).parent / "threadline")
"""The installed script (runs this checkout's code: PYTHONPATH is inherited)."""
CALC = str(ROOT / "examples" / "calculator" / "agent.py")


@dataclass
class LiveServer:
    url: str
    db_path: Path
    runtime: Runtime
    services: Services
    server: uvicorn.Server
    thread: threading.Thread
    app: Any
    keys: dict[str, str] = field(default_factory=dict)

    def client(self, key: str | None = "admin") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stored_events(self, thread_id: str) -> list[tuple[int, str]]:
        """The rows in the database, read independently of the server."""
        with sqlite3.connect(self.db_path) as conn:
            return conn.execute(
                "SELECT seq, body FROM events WHERE thread_id = ? ORDER BY seq", (thread_id,)
            ).fetchall()

    def wait_status(self, thread_id: str, wanted: set[str], timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while True:
                body = c.get(f"/v1/threads/{thread_id}").json()
                if body["status"] in wanted or time.monotonic() > deadline:
                    return body
                time.sleep(0.02)

    def launch(
        self, agent: str = "deploybot", message: str = "deploy the backend to production"
    ) -> dict[str, Any]:
        """Launch over HTTP and wait until the thread stops running."""
        with self.client("admin") as c:
            r = c.post(
                "/v1/threads",
                json={"agent": agent, "message": message, "wait": True, "wait_timeout": 20},
            )
        assert r.status_code == 201, r.text
        return r.json()

    def stop(self, timeout: float = 30) -> bool:
        """Shut the server down as SIGTERM would; True once it has stopped (within
        `timeout` seconds)."""
        self.server.should_exit = True
        self.thread.join(timeout=timeout)
        return not self.thread.is_alive()


def start_server(
    tmp_path: Path,
    agents: list[Agent],
    model: Any,
    *,
    config: ServerConfig | None = None,
    keys: dict[str, list[str]] | None = None,
    host: str = "127.0.0.1",
    channels: Any = None,
    port: int = 0,
    wrap: Callable[[Any], Any] | None = None,
) -> LiveServer:
    """A server on `port` of `host` (0: a free one) over `tmp_path`/threads.db; run as
    `threadline serve` runs it (`GracefulServer`); `wrap`, when given, is an ASGI
    middleware put in front of the app (a server that misbehaves in a chosen way)."""
    db_path = tmp_path / "threads.db"
    created: dict[str, str] = {}

    async def make_keys() -> None:
        async with SQLiteStore(db_path) as store:
            for name, scopes in (keys or {}).items():
                _, secret = await create_key(key_store(store), name, scopes)
                created[name] = secret

    with ThreadPoolExecutor(1) as pool:  # a loop of its own, even beside Playwright's
        pool.submit(asyncio.run, make_keys()).result()
    config = config or ServerConfig(webhook_secret=SECRET, poll_interval=0.2)
    services = Services.build(
        config,
        lambda observers: Runtime(
            SQLiteStore(db_path), agents=agents, model=model, observers=observers
        ),
        channels=channels,
    )
    app = create_app(services)
    uv, thread, url = _start_uvicorn(app if wrap is None else wrap(app), host, port, services)
    return LiveServer(url, db_path, services.runtime, services, uv, thread, app, created)


def _start_uvicorn(
    app: Any, host: str, port: int = 0, services: Services | None = None
) -> tuple[uvicorn.Server, threading.Thread, str]:
    """`app` under uvicorn on `port` of `host` (0: a free one; lifespan on), in a daemon
    thread; a `GracefulServer` when given the app's `services`."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    uv = uvicorn.Server(config) if services is None else GracefulServer(config, services)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    port = uv.servers[0].sockets[0].getsockname()[1]
    return uv, thread, f"http://{host}:{port}"


@contextlib.contextmanager
def serving(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Any ASGI `app` under a real uvicorn on loopback while the block runs; yields its URL."""
    uv, thread, url = _start_uvicorn(app, host)
    try:
        yield url
    finally:
        uv.should_exit = True
        thread.join(timeout=20)


DEFAULT_KEYS = {
    "admin": ["admin"],
    "alice": ["respond", "read"],
    "reader": ["read"],
    "launcher": ["launch", "read"],
    "bob": ["respond", "read"],
}


def deploy_model(tag: str = "v1.5.0", environment: str = "production") -> FunctionModel:
    """Deploybot's model: list tags, deploy the newest, report; on a rejection, give up."""

    def answer(context: Context) -> Any:
        # Reads the rendered thread loosely, so it survives changes to the renderer's tags.
        text = "\n".join(m.content for m in context.messages)
        rejected = re.search(r"<rejected[^>]*>(.*?)(?=\n<|\Z)", text, re.S)
        if rejected:
            reason = rejected.group(1).strip()
            return intent("done_for_now", message="Deploy cancelled: " + reason)
        if f"deployed to {environment}" in text:
            return intent("done_for_now", message=f"Deployed {tag} to {environment}.")
        if "v1.4.1" in text:  # the tag list came back
            return intent("deploy_backend", tag=tag, environment=environment)
        return intent("list_git_tags")

    return FunctionModel(answer, model_id="deploy-script")


@pytest.fixture
def deploybot() -> Agent:
    return load_agent(str(ROOT / "examples/deploybot/agent.py") + ":agent")


def guarded(deploybot: Agent) -> Agent:
    """Deploybot whose production deploys only alice may approve."""
    return dataclasses.replace(
        deploybot,
        name="guarded",
        approvers={"deploy_backend": ["alice"]},
    )


def asker(name: str = "asker", responders: tuple[str, ...] = ()) -> Agent:
    """Asks one question, then finishes with the latest answer (its own model); only
    `responders` may answer when any are named."""

    def answer(context: Context) -> Any:
        events = context.messages[-1].content
        if "Which environment?" in events:  # asked before: the newest text is the answer
            tail = re.sub(r"<[^>]*>", "\n", events.rsplit("Which environment?", 1)[1])
            lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
            return intent("done_for_now", message="Thanks: " + lines[-1])
        return intent("request_more_information", message="Which environment?")

    return Agent(
        name=name,
        instructions="Ask, then answer.",
        model=FunctionModel(answer, model_id="asker-script"),
        responders=responders,
    )


@pytest.fixture
def live(tmp_path: Path, deploybot: Agent) -> Iterator[LiveServer]:
    server = start_server(
        tmp_path,
        [deploybot, guarded(deploybot), asker(), asker("gated_asker", ("alice",))],
        deploy_model(),
        keys=DEFAULT_KEYS,
    )
    yield server
    server.stop()


def signed(
    body: dict[str, Any],
    *,
    secret: str = SECRET,
    now: float | None = None,
) -> tuple[bytes, dict[str, str]]:
    from threadline.server.webhooks import signed_headers

    raw = json.dumps(body).encode()
    return raw, signed_headers(secret, raw, now=now)


Factory = Callable[..., LiveServer]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CALC_ANSWERS = [
    {"intent": "divide", "arguments": {"a": 9, "b": 3}},
    {"intent": "done_for_now", "arguments": {"message": "9/3 = 3"}},
]
"""The calculator's scripted model: ask to divide 9 by 3 (needs approval), then answer."""


@contextlib.contextmanager
def serve_calculator(
    tmp_path: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, dict[str, str]]]:
    """`threadline serve --no-auth` of the calculator (scripted model) in its own process,
    with `extra_env` added to its environment.

    Yields the server's URL and an environment for client processes whose own local store
    is a different, empty file: anything they see came over HTTP.
    """
    (tmp_path / "answers.json").write_text(json.dumps(CALC_ANSWERS))
    env = {
        **os.environ,
        "THREADLINE_STORE": f"sqlite:///{tmp_path}/server.db",
        "THREADLINE_MODEL": f"scripted:{tmp_path}/answers.json",
        "THREADLINE_LOG": "off",
        "COLUMNS": "200",
        **(extra_env or {}),
    }
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "threadline", "serve", "--agent", f"{CALC}:agent"]
        + ["--port", str(port), "--no-auth"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "server died")
            time.sleep(0.1)
        yield url, {**env, "THREADLINE_STORE": f"sqlite:///{tmp_path}/client-local.db"}
    finally:
        proc.terminate()
        proc.wait(20)


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    """`r` is a problem document with `status`, a title and a detail, and no traceback."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert "Traceback" not in r.text
    return body


def approval_body(thread_id: str, call_id: str, **extra: object) -> dict[str, Any]:
    """An inbound webhook approving `call_id`, from alice."""
    return {
        "type": "approval",
        "thread_id": thread_id,
        "call_id": call_id,
        "approved": True,
        "by": "alice",
        **extra,
    }


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium driven by Playwright. Without Debian's chromium the test skips,
    except in CI (CI=true), where a missing browser is a failure."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing in CI: scripts/services.sh installs it")
        pytest.skip(
            "Debian's chromium is not installed (apt-get install chromium, or `make services`)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def signed_in_page(server: LiveServer, browser: Any, key: str = "admin") -> tuple[Any, list[str]]:
    """A page of `server`'s inbox with `key` entered, and the list its script errors go to."""
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.fill("#key-input", server.keys[key])
    page.click("#key-form button")
    return page, errors
