"""Guard verdicts over HTTP and in the inbox (issue 13), on a real uvicorn server: a call a
guard sent to approval shows the guard and its reason in the thread view, the inbox and
the inbox card; every verdict is an event with its summary; hostile reasons stay text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server_support import DEFAULT_KEYS, LiveServer, start_server
from threadline import Agent, GuardCall, GuardDecision, tool
from threadline.guards import allow, block, require_approval
from threadline.models.base import Context
from threadline.testing import FunctionModel, intent

HOSTILE = "<img src=x onerror=alert(1)> restarting the database drops every connection"


@tool(side_effects=True)
def restart(service: str) -> str:
    """Restart a service (no approval of its own).

    Args:
        service: which one
    """
    return f"restarted {service}"


def careful(call: GuardCall) -> GuardDecision:
    if call.arguments["service"] == "everything":
        return block("restart one service at a time")
    if call.arguments["service"] == "db":
        return require_approval(HOSTILE)
    return allow()


def ops_model(context: Context) -> Any:
    text = context.as_text()
    if "restarted" in text or "<blocked" in text or "<rejected" in text:
        return intent("done_for_now", message="finished")
    return intent("restart", service="everything" if "every service" in text else "db")


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[LiveServer]:
    agent = Agent("ops", tools=[restart], guards=[careful], model=FunctionModel(ops_model))
    server = start_server(tmp_path, [agent], None, keys=DEFAULT_KEYS)
    yield server
    server.stop()


def test_the_api_shows_the_guard_that_required_approval_and_every_verdict(
    guarded: LiveServer,
) -> None:
    thread = guarded.launch("ops", "restart the db")
    assert thread["status"] == "awaiting_approval", thread
    (card,) = thread["pending_approvals"]
    assert card["tool"] == "restart" and card["guard"] == f"careful: {HOSTILE}"
    with guarded.client("reader") as c:
        inbox = c.get("/v1/inbox").json()["items"]
        events = c.get(f"/v1/threads/{thread['id']}/events").json()["events"]
    assert [i["pending_approvals"][0]["guard"] for i in inbox] == [card["guard"]]
    (verdict,) = [e for e in events if e["kind"] == "guard_verdict"]
    assert verdict["verdict"] == "require_approval" and verdict["guard"] == "careful"
    assert verdict["summary"]["text"].startswith("careful: require_approval restart [")

    blocked = guarded.launch("ops", "restart every service")
    assert blocked["status"] == "done" and blocked["result"] == "finished"
    with guarded.client("reader") as c:
        events = c.get(f"/v1/threads/{blocked['id']}/events").json()["events"]
    kinds = [e["kind"] for e in events]
    assert "tool_result" not in kinds and kinds.count("guard_verdict") == 1


@pytest.mark.browser
def test_the_inbox_card_names_the_guard_and_shows_its_reason_as_text(
    guarded: LiveServer, browser: Any
) -> None:
    thread = guarded.launch("ops", "restart the db")
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(guarded.url + "/")
    page.fill("#key-input", guarded.keys["alice"])
    page.click("#key-form button")
    card = page.locator(f'article.approval[data-thread="{thread["id"]}"]')
    card.wait_for()
    note = card.locator(".guard")
    assert "sent here by guard" in note.inner_text().lower() and HOSTILE in note.inner_text()
    assert card.locator("img").count() == 0  # the reason is text, never markup
    assert errors == []
