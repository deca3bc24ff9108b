"""`threadline.client.Client` (what `--server URL` CLI commands use) against a live server,
including from a process where the `server` extra (FastAPI, Starlette, uvicorn) is missing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

import server_support
from server_support import LiveServer, serve_calculator
from threadline.client import Client
from threadline.errors import InvalidAction, NotAllowed, ServerError, ThreadNotFound
from threadline.events import Status, Thread
from threadline.settings import Settings

deploybot = server_support.deploybot
live = server_support.live
"""The live-server fixtures of tests/server, used here too."""


async def test_launch_approve_stream_and_load(live: LiveServer) -> None:
    async with Client(live.url, api_key=live.keys["admin"]) as client:
        assert await client.ready()
        view = await client.launch("deploybot", "deploy the backend", wait=True)
        assert view.status == Status.AWAITING_APPROVAL
        call = view.pending_approvals[0]

        seen: list[str] = []

        async def watch() -> None:
            async for event in client.stream(view.id):
                seen.append(event.kind)
                if event.kind == "done":
                    return

        watcher = asyncio.create_task(watch())
        after = await client.approve(view.id, call.call_id, comment="go")
        assert after.status in (Status.RUNNING, Status.DONE)
        await asyncio.wait_for(watcher, 20)
        assert seen[0] == "user_message" and seen[-1] == "done"
        assert "approval" in seen and "tool_result" in seen

        thread = await client.load(view.id)
        assert isinstance(thread, Thread)
        assert thread.status == Status.DONE
        assert [e.seq for e in thread.events] == list(range(len(thread.events)))
        assert thread.events[-1].kind == "done"
        tail = await client.events(view.id, after=len(thread.events) - 3)
        assert [e.seq for e in tail] == [len(thread.events) - 2, len(thread.events) - 1]


async def test_question_answer_message_pause_resume_fork(live: LiveServer) -> None:
    async with Client(live.url, api_key=live.keys["admin"]) as client:
        view = await client.launch("asker", "deploy something", wait=True)
        assert view.status == Status.AWAITING_HUMAN
        assert view.question is not None and view.question.question == "Which environment?"

        paused = await client.pause(view.id, reason="maintenance")
        assert paused.status == Status.PAUSED
        with pytest.raises(InvalidAction):
            await client.pause(view.id)
        with pytest.raises(InvalidAction):  # not the open request
            await client.respond(view.id, "wrong-request", "staging")
        assert (await client.resume(view.id)).status == Status.AWAITING_HUMAN

        await client.respond(view.id, view.question.request_id, "staging")
        done = await _settle(client, view.id)
        assert done.status == Status.DONE and done.result == "Thanks: staging"

        again = await client.message(view.id, "and production?")
        assert again.status == Status.RUNNING
        final = await _settle(client, view.id)
        assert final.status == Status.DONE and final.result == "Thanks: and production?"

        forked = await client.fork(view.id, at=0)
        assert forked.id != view.id
        source = await client.load(forked.id)
        assert source.events[1].kind == "forked_from"

        page = await client.list_threads(agent="asker", limit=1)
        assert len(page.items) == 1 and page.cursor is not None
        rest = await client.list_threads(agent="asker", limit=10, cursor=page.cursor)
        assert {t.id for t in page.items + rest.items} == {view.id, forked.id}


async def _settle(client: Client, thread_id: str):
    for _ in range(400):
        view = await client.get(thread_id)
        if view.status != Status.RUNNING:
            return view
        await asyncio.sleep(0.02)
    return view


async def test_errors_come_back_as_threadline_errors(live: LiveServer) -> None:
    async with Client(live.url, api_key=live.keys["bob"]) as client:
        with pytest.raises(ThreadNotFound):
            await client.get("th_nope")
    thread = live.launch("guarded")
    call_id = thread["pending_approvals"][0]["call_id"]
    async with Client(live.url, api_key=live.keys["bob"]) as client:
        with pytest.raises(NotAllowed):
            await client.approve(thread["id"], call_id)
        with pytest.raises(InvalidAction):
            await client.approve(thread["id"], "c404")
        with pytest.raises(ServerError) as forbidden:
            await client.launch("deploybot", "hi")
        assert forbidden.value.status == 403
    async with Client(live.url) as client:
        with pytest.raises(ServerError) as unauthorized:
            await client.get(thread["id"])
        assert unauthorized.value.status == 401
        assert unauthorized.value.problem["title"] == "Unauthorized"
    async with Client("http://127.0.0.1:9") as client:
        with pytest.raises(ServerError, match="cannot reach"):
            await client.get(thread["id"])


async def test_a_misspelt_option_is_a_type_error_not_a_request() -> None:
    """Options the server would ignore fail before anything is sent (nothing listens on
    port 9), as a misspelt keyword does against a plain signature."""
    async with Client("http://127.0.0.1:9") as client:
        with pytest.raises(TypeError, match="'stauts'"):
            await client.list_threads(stauts="done")  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="'budgett'"):
            await client.launch("deploybot", "hi", budgett=None)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="'aproved'"):
            await client.approve("th_1", "c1", aproved=False)  # type: ignore[call-arg]


async def test_from_settings_reads_the_api_key(live: LiveServer, monkeypatch) -> None:
    monkeypatch.setenv("THREADLINE_API_KEY", live.keys["reader"])
    async with Client.from_settings(live.url, Settings()) as client:
        page = await client.list_threads()
        assert page.items == []


WITHOUT_SERVER_EXTRA = """
import importlib.abc, sys

BLOCKED = {"fastapi", "starlette", "uvicorn"}


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"No module named {name!r} (the server extra is not installed)")
        return None


sys.meta_path.insert(0, NotInstalled())
try:
    import fastapi  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("the finder did not block fastapi")

import asyncio, json
from threadline.client import Client
from threadline.errors import InvalidAction


async def main(url):
    async with Client(url) as client:
        view = await client.launch("calculator", "what is 9/3?", wait=True, wait_timeout=20)
        call = view.pending_approvals[0].call_id
        await client.approve(view.id, call)
        thread = await client.settle(view.id, within=20)
        try:
            await client.approve(view.id, call)
            conflict = None
        except InvalidAction as exc:
            conflict = type(exc).__name__
    return {
        "launched": view.status.value,
        "status": thread.status.value,
        "kinds": [e.kind for e in thread.events],
        "conflict": conflict,
        "server_modules": sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED),
    }


print(json.dumps(asyncio.run(main(sys.argv[1]))))
"""


def test_client_works_without_the_server_extra(tmp_path: Path) -> None:
    with serve_calculator(tmp_path) as (url, env):
        out = subprocess.run(
            [sys.executable, "-c", WITHOUT_SERVER_EXTRA, url],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["launched"] == "awaiting_approval"
    assert result["status"] == "done"
    assert result["kinds"][-1] == "done" and "approval" in result["kinds"]
    assert result["conflict"] == "InvalidAction"
    assert result["server_modules"] == []
