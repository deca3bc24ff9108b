"""Sub-agents over the HTTP API (issue 13), on a real uvicorn server: a grandchild's two
approvals show in the inbox with its ancestry; one batch of verdicts answers both, and the
answer resumes grandchild, child and parent to `done`; the parent replays event for event."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server_support import DEFAULT_KEYS, LiveServer, start_server
from threadline import Agent, InvalidAction, SQLiteStore, Verdict, replay_thread, tool
from threadline.client import Client
from threadline.models.base import Context
from threadline.testing import FunctionModel, intent
from threadline.wire import ThreadOut

POSTED: list[int] = []


@tool(side_effects=True, approval="always")
def post_entry(amount: int) -> str:
    """Post an entry to the ledger (needs approval)."""
    POSTED.append(amount)
    return f"posted {amount}"


def _ledger(context: Context) -> Any:
    text = context.as_text()
    if "<post_entry_result" in text or "<rejected" in text:
        return intent("done_for_now", message=f"ledger: {text.count('<post_entry_result')} posted")
    return [intent("post_entry", amount=5), intent("post_entry", amount=7)]


def _accounts(context: Context) -> Any:
    if "<ledger_result" in context.as_text():
        return intent("done_for_now", message="accounts: booked")
    return intent("ledger", task="post the entries")


def _coordinator(context: Context) -> Any:
    if "<accounts_result" in context.as_text():
        return intent("done_for_now", message="coordinator: all booked")
    return intent("accounts", task="book the entries")


def _tree() -> Agent:
    ledger = Agent("ledger", tools=[post_entry], model=FunctionModel(_ledger))
    accounts = Agent("accounts", tools=[ledger.as_tool()], model=FunctionModel(_accounts))
    return Agent("coordinator", tools=[accounts.as_tool()], model=FunctionModel(_coordinator))


@pytest.fixture
def tree_server(tmp_path: Path) -> Iterator[LiveServer]:
    POSTED.clear()
    server = start_server(tmp_path, [_tree()], None, keys=DEFAULT_KEYS)
    yield server
    server.stop()


def _wait(live: LiveServer, thread_id: str, wanted: str) -> dict[str, Any]:
    body = live.wait_status(thread_id, {wanted}, timeout=90)
    assert body["status"] == wanted, body
    return body


def test_a_grandchild_approval_surfaces_with_its_ancestry_and_resumes_the_tree(
    tree_server: LiveServer,
) -> None:
    live = tree_server
    root = live.launch("coordinator", "book the entries")
    root = _wait(live, root["id"], "waiting")
    (child_id,) = root["children"]
    child = _wait(live, child_id, "waiting")
    (grandchild_id,) = child["children"]
    _wait(live, grandchild_id, "awaiting_approval")

    with live.client("alice") as c:
        inbox = c.get("/v1/inbox").json()["items"]
        (item,) = inbox
        assert item["id"] == grandchild_id and item["agent"] == "ledger"
        assert [(a["thread"], a["agent"]) for a in item["ancestors"]] == [
            (root["id"], "coordinator"),
            (child_id, "accounts"),
        ]
        five, seven = (p["call_id"] for p in item["pending_approvals"])
        bad = c.post(
            f"/v1/threads/{grandchild_id}/approvals",
            json={
                "verdicts": [
                    {"call_id": five, "approved": True},
                    {"call_id": "nope", "approved": True},
                ]
            },
        )
        assert bad.status_code == 409
        r = c.post(
            f"/v1/threads/{grandchild_id}/approvals",
            json={
                "verdicts": [
                    {"call_id": five, "approved": True},
                    {"call_id": seven, "approved": False, "comment": "not 7"},
                ]
            },
        )
        assert r.status_code == 200, r.text

    final = _wait(live, root["id"], "done")
    assert final["result"] == "coordinator: all booked"
    _wait(live, child_id, "done")
    _wait(live, grandchild_id, "done")
    assert POSTED == [5]
    kinds = [json.loads(b)["kind"] for _, b in live.stored_events(grandchild_id)]
    assert kinds.count("approval") == 2  # the rejected batch wrote nothing

    async def replay() -> None:
        async with SQLiteStore(live.db_path) as store:  # a reader of its own
            for thread_id in (root["id"], child_id, grandchild_id):
                thread = await store.load(thread_id)
                derived = replay_thread(live.runtime.agent(thread.agent), thread)
                assert len(derived.events) == len(thread.events)

    asyncio.run(replay())


@pytest.mark.browser
def test_the_inbox_page_shows_the_ancestry_and_sends_one_batch(
    tree_server: LiveServer,
    browser: Any,
) -> None:
    live = tree_server
    root = live.launch("coordinator", "book the entries")
    root = _wait(live, root["id"], "waiting")
    (child_id,) = root["children"]
    (grandchild_id,) = _wait(live, child_id, "waiting")["children"]
    _wait(live, grandchild_id, "awaiting_approval")
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live.url + "/")
    page.fill("#key-input", live.keys["alice"])
    page.click("#key-form button")
    card = page.locator(f'article.batch[data-thread="{grandchild_id}"]')
    card.wait_for(timeout=60_000)
    meta = card.locator(".meta").inner_text()
    assert "sub-agent of coordinator › accounts ›" in meta and "ledger" in meta
    assert card.locator("select").count() == 2
    card.locator("select").nth(1).select_option("reject")
    card.locator("textarea").fill("not 7")
    card.get_by_role("button", name="Send all verdicts").click()
    final = _wait(live, root["id"], "done")
    assert final["result"] == "coordinator: all booked"
    assert POSTED == [5]
    verdicts = [
        json.loads(b)
        for _, b in live.stored_events(grandchild_id)
        if json.loads(b)["kind"] == "approval"
    ]
    assert [(v["approved"], v["comment"], v["by"]) for v in verdicts] == [
        (True, None, "alice"),
        (False, "not 7", "alice"),
    ]
    assert errors == []


def test_the_client_sends_a_batch_of_verdicts(tree_server: LiveServer) -> None:
    live = tree_server
    root = live.launch("coordinator", "book the entries")
    (child_id,) = _wait(live, root["id"], "waiting")["children"]
    (grandchild_id,) = _wait(live, child_id, "waiting")["children"]
    pending = _wait(live, grandchild_id, "awaiting_approval")["pending_approvals"]
    five, seven = (p["call_id"] for p in pending)

    async def answer() -> ThreadOut:
        async with Client(live.url, api_key=live.keys["alice"]) as client:
            with pytest.raises(InvalidAction):
                await client.approve_many(grandchild_id, [Verdict(five), Verdict("nope")])
            return await client.approve_many(
                grandchild_id,
                [Verdict(five, edited_arguments={"amount": 6}), Verdict(seven, approved=False)],
            )

    shown = asyncio.run(answer())
    assert shown.id == grandchild_id
    _wait(live, root["id"], "done")
    assert POSTED == [6]


def test_cancel_over_http_needs_admin_and_cascades(tree_server: LiveServer) -> None:
    live = tree_server
    root = live.launch("coordinator", "book the entries")
    (child_id,) = _wait(live, root["id"], "waiting")["children"]
    (grandchild_id,) = _wait(live, child_id, "waiting")["children"]
    _wait(live, grandchild_id, "awaiting_approval")
    with live.client("alice") as c:
        assert c.post(f"/v1/threads/{root['id']}/cancel", json={}).status_code == 403
    with live.client("admin") as c:
        r = c.post(f"/v1/threads/{root['id']}/cancel", json={"reason": "duplicate"})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "failed"
        assert c.get("/v1/inbox").json()["items"] == []
    for thread_id in (root["id"], child_id, grandchild_id):
        _wait(live, thread_id, "failed")
        body = json.loads(live.stored_events(thread_id)[-1][1])
        assert body["kind"] == "failed" and body["reason"] == "cancelled by admin: duplicate"
