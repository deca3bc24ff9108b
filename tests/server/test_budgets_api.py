"""Budgets over the HTTP API (issue 13), on a real uvicorn server: a launch's own budget,
validated (a negative number is a 422 and nothing is created); an exhausted budget's
figures in the thread view and in the inbox, as JSON and as the inbox page's card; a
thread's budget raised, and the thread it stopped running on."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from budget_support import lookup, runaway
from server_support import DEFAULT_KEYS, LiveServer, assert_problem, signed_in_page, start_server
from threadline import Agent, Budget
from threadline.client import Client


@pytest.fixture
def served(tmp_path: Path) -> Iterator[LiveServer]:
    spender = Agent("spender", tools=[lookup], model=runaway(), max_steps=1000)
    unpriced = Agent("unpriced", tools=[lookup], model=runaway("mystery", price=None))
    server = start_server(tmp_path, [spender, unpriced], None, keys=DEFAULT_KEYS)
    yield server
    server.stop()


def _threads(server: LiveServer) -> int:
    with sqlite3.connect(server.db_path) as conn:
        return int(conn.execute("SELECT count(*) FROM threads").fetchone()[0])


def _launch(server: LiveServer, **extra: Any) -> Any:
    with server.client("admin") as c:
        return c.post(
            "/v1/threads",
            json={"agent": "spender", "message": "look it all up", "wait": True} | extra,
        )


def test_a_launch_with_a_bad_budget_is_refused_with_nothing_created(served: LiveServer) -> None:
    for bad in ({"max_usd": -1}, {"max_tokens": -3}, {"max_dollars": 2}, {"max_usd": "lots"}):
        assert_problem(_launch(served, budget=bad), 422)
        assert_problem(_launch(served, tree_budget=bad), 422)
        assert_problem(_launch(served, metadata={"budget": bad}), 422)
    with served.client("admin") as c:
        r = c.post(
            "/v1/threads",
            json={"agent": "unpriced", "message": "go", "budget": {"max_usd": 1}},
        )
    assert_problem(r, 422)
    assert "needs the price of model mystery" in r.json()["detail"]
    assert _threads(served) == 0


def test_an_exhausted_budget_shows_its_figures_in_the_thread_and_the_inbox(
    served: LiveServer,
) -> None:
    r = _launch(served, budget={"max_model_calls": 2})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "escalated" and body["metadata"]["budget"] == {"max_model_calls": 2}
    details = body["escalation"]["details"]
    assert details["source"] == "budget" and details["scope"] == "thread"
    assert details["exceeded"] == ["model_calls"]
    assert details["figures"]["model_calls"] == {"used": 2, "reserved": 0, "next": 1, "limit": 2}
    assert (
        "model_calls 2 used + 0 reserved + 1 for the next call > 2 limit"
        in (body["escalation"]["reason"])
    )
    with served.client("reader") as c:
        inbox = c.get("/v1/inbox").json()["items"]
    (item,) = [t for t in inbox if t["id"] == body["id"]]
    assert item["escalation"] == body["escalation"]


def test_the_python_client_launches_with_a_budget(served: LiveServer) -> None:
    async def go() -> Any:
        async with Client(served.url, api_key=served.keys["admin"]) as client:
            launched = await client.launch(
                "spender", "go", budget=Budget(max_tokens=1500), wait=True, wait_timeout=20
            )
            return launched

    out = asyncio.run(go())
    assert out.status == "escalated" and out.metadata["budget"] == {"max_tokens": 1500}
    assert out.escalation is not None
    assert out.escalation.details["exceeded"] == ["tokens"]
    assert out.escalation.details["figures"]["tokens"]["used"] <= 1500


@pytest.mark.browser
def test_the_inbox_page_shows_the_budget_figures(served: LiveServer, browser: Any) -> None:
    body = _launch(served, budget={"max_model_calls": 2}).json()
    page, errors = signed_in_page(served, browser)
    card = page.locator(f"article.card.escalation[data-thread='{body['id']}']")
    expect(card).to_be_visible()
    expect(card.locator("h3")).to_have_text("Budget exhausted (thread)")
    row = card.locator("table.figures tr.over")
    expect(row).to_have_count(1)
    expect(row.locator("th")).to_have_text("model_calls")
    expect(row.locator("td")).to_have_text(["2", "0", "1", "2"])
    assert errors == []


@pytest.mark.browser
def test_the_inbox_raises_a_budget_and_the_thread_runs_on_to_it(
    served: LiveServer, browser: Any
) -> None:
    # The escalation card of a thread its own budget stopped offers its limits to raise:
    # unchanged, nothing is sent; raised, the thread runs on to the new limit and stops
    # there again (a new card, its figures at the new limit).
    body = _launch(served, budget={"max_model_calls": 2}).json()
    tid = body["id"]
    page, errors = signed_in_page(served, browser)
    card = page.locator(f"article.card.escalation[data-thread='{tid}']")
    limit = card.get_by_label("New model_calls limit")
    expect(limit).to_have_value("2")
    card.get_by_role("button", name="Raise budget").click()
    expect(page.locator("#notice")).to_contain_text("higher than it is")
    with served.client("reader") as c:
        before = len(c.get(f"/v1/threads/{tid}/events").json()["events"])
        assert c.get(f"/v1/threads/{tid}").json()["status"] == "escalated"
    limit.fill("4")
    card.get_by_role("button", name="Raise budget").click()
    again = page.locator(f"article.card.escalation[data-thread='{tid}']")
    expect(again.get_by_label("New model_calls limit")).to_have_value("4", timeout=20_000)
    expect(again.locator("table.figures tr.over td")).to_have_text(["4", "0", "1", "4"])
    with served.client("reader") as c:
        events = c.get(f"/v1/threads/{tid}/events").json()["events"]
    assert len(events) > before
    [raised] = [e for e in events if e["kind"] == "budget_raised"]
    assert raised["budget"]["max_model_calls"] == 4
    assert errors == []

    # A key that may not raise budgets: the server refuses, the card stays, and says so.
    page, errors = signed_in_page(served, browser, key="launcher")
    card = page.locator(f"article.card.escalation[data-thread='{tid}']")
    card.get_by_label("New model_calls limit").fill("6")
    card.get_by_role("button", name="Raise budget").click()
    expect(page.locator("#notice")).to_be_visible()
    expect(card.get_by_role("button", name="Raise budget")).to_be_enabled()
    with served.client("reader") as c:
        assert c.get(f"/v1/threads/{tid}").json()["status"] == "escalated"
    assert errors == []


def _settled(server: LiveServer, thread_id: str) -> Any:
    """The thread once the server's runner stopped it (a bound on a wait, not a timing)."""
    with server.client("reader") as c:
        for _ in range(400):
            body = c.get(f"/v1/threads/{thread_id}").json()
            if body["status"] != "running":
                return body
            time.sleep(0.05)
    raise AssertionError(f"thread {thread_id} still running: {body}")


def test_raising_a_budget_lets_the_thread_it_stopped_run_on(served: LiveServer) -> None:
    """POST /v1/threads/{id}/budget writes `budget_raised` (admin only); the runner takes the
    thread on to its new limit. A bad body is a 422, a limit below what was used or the
    current one (or of a kind it has no limit of) a 409, an unknown thread a 404: nothing
    is written."""
    body = _launch(served, budget={"max_model_calls": 2}).json()
    tid, url = body["id"], f"/v1/threads/{body['id']}/budget"
    assert body["status"] == "escalated"
    with served.client("admin") as c:
        count = len(c.get(f"/v1/threads/{tid}/events").json()["events"])
        for bad, status in [
            ({"max_model_calls": -1}, 422),
            ({"max_dollars": 2}, 422),
            ({}, 409),
            ({"max_model_calls": 1}, 409),
            ({"max_usd": 1}, 409),
        ]:
            assert_problem(c.post(url, json=bad), status)
        assert_problem(c.post("/v1/threads/th_nope/budget", json={"max_model_calls": 3}), 404)
        assert len(c.get(f"/v1/threads/{tid}/events").json()["events"]) == count
    with served.client("launcher") as c:
        assert c.post(url, json={"max_model_calls": 4}).status_code == 403

    with served.client("admin") as c:
        r = c.post(url, json={"max_model_calls": 4})
    assert r.status_code == 200 and r.json()["status"] == "running", r.text
    again = _settled(served, tid)
    assert again["status"] == "escalated"
    assert again["escalation"]["details"]["figures"]["model_calls"]["used"] == 4

    async def through_the_client() -> Any:
        async with Client(served.url, api_key=served.keys["admin"]) as client:
            return await client.raise_budget(tid, Budget(max_model_calls=5))

    assert asyncio.run(through_the_client()).status == "running"
    last = _settled(served, tid)
    assert last["escalation"]["details"]["figures"]["model_calls"]["used"] == 5
    with served.client("reader") as c:
        events = c.get(f"/v1/threads/{tid}/events").json()["events"]
    raised = [e for e in events if e["kind"] == "budget_raised"]
    assert [(e["budget"]["max_model_calls"], e["by"]) for e in raised] == [
        (4, "admin"),
        (5, "admin"),
    ]
