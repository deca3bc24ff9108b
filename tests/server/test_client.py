"""`threadline.client.Client` (what `--server URL` CLI commands use) against a live server."""

from __future__ import annotations

import asyncio

import pytest
from server_support import LiveServer

from threadline.client import Client
from threadline.errors import InvalidAction, NotAllowed, ServerError, ThreadNotFound
from threadline.events import Status, Thread
from threadline.settings import Settings


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


async def test_from_settings_reads_the_api_key(live: LiveServer, monkeypatch) -> None:
    monkeypatch.setenv("THREADLINE_API_KEY", live.keys["reader"])
    async with Client.from_settings(live.url, Settings()) as client:
        page = await client.list_threads()
        assert page.items == []
