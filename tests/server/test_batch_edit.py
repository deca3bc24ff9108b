"""The inbox page's batch card (issue 13), in headless Chromium against a real server: one
answer with three calls awaiting approval; approve one, reject one and edit the arguments
of the third, in one request. Edits that are not a JSON object, or that the tool's schema
refuses, send or write nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from server_support import DEFAULT_KEYS, LiveServer, signed_in_page, start_server
from threadline import Agent, tool
from threadline.models.base import Context
from threadline.testing import FunctionModel, intent

pytestmark = pytest.mark.browser

PAID: list[tuple[str, int]] = []


@tool(side_effects=True, approval="always")
def pay(invoice: str, amount: int) -> str:
    """Pay an invoice (needs approval)."""
    PAID.append((invoice, amount))
    return f"paid {invoice}: {amount}"


def _answer(context: Context) -> Any:
    text = context.as_text()
    if "<pay_result" in text or "<rejected" in text:
        return intent("done_for_now", message=f"{text.count('<pay_result')} paid")
    return [
        intent("pay", invoice="A", amount=10),
        intent("pay", invoice="B", amount=20),
        intent("pay", invoice="C", amount=30),
    ]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[LiveServer]:
    PAID.clear()
    books = Agent("books", tools=[pay], model=FunctionModel(_answer, model_id="books"))
    server = start_server(tmp_path, [books], None, keys=DEFAULT_KEYS)
    yield server
    server.stop()


def _batch(served: LiveServer, browser: Any) -> tuple[Any, Any, list[str], str]:
    thread = served.launch("books", "pay the three invoices")
    assert thread["status"] == "awaiting_approval" and len(thread["pending_approvals"]) == 3
    page, errors = signed_in_page(served, browser, "alice")
    card = page.locator(f'article.batch[data-thread="{thread["id"]}"]')
    card.wait_for(timeout=30_000)
    return page, card, errors, thread["id"]


def _approvals(served: LiveServer, thread_id: str) -> list[dict[str, Any]]:
    bodies = [json.loads(b) for _, b in served.stored_events(thread_id)]
    return [b for b in bodies if b["kind"] == "approval"]


def test_approve_reject_and_edit_three_calls_in_one_request(
    served: LiveServer, browser: Any
) -> None:
    page, card, errors, thread_id = _batch(served, browser)
    picks = card.locator("select")
    expect(picks).to_have_count(3)
    picks.nth(1).select_option("reject")
    picks.nth(2).select_option("edit")
    editor = card.locator("textarea.args-editor")
    expect(editor).to_have_count(1)
    assert json.loads(editor.input_value()) == {"invoice": "C", "amount": 30}
    editor.fill('{"invoice": "C", "amount": ')  # not JSON yet: nothing is sent
    card.get_by_role("button", name="Send all verdicts").click()
    expect(page.locator(".notice")).to_contain_text("not valid JSON")
    assert _approvals(served, thread_id) == []
    editor.fill('{"invoice": "C", "amount": 25}')
    card.get_by_role("textbox", name="Batch comment").fill("B is disputed")
    card.get_by_role("button", name="Send all verdicts").click()
    final = served.wait_status(thread_id, {"done"})
    assert final["result"] == "2 paid"
    assert sorted(PAID) == [("A", 10), ("C", 25)]
    verdicts = [
        (v["approved"], v["comment"], v["edited_arguments"], v["by"], v["channel"])
        for v in _approvals(served, thread_id)
    ]
    assert verdicts == [
        (True, None, None, "alice", "ui"),
        (False, "B is disputed", None, "alice", "ui"),
        (True, None, {"invoice": "C", "amount": 25}, "alice", "ui"),
    ]
    assert errors == []


def test_an_edit_the_tool_refuses_writes_nothing_and_keeps_the_card(
    served: LiveServer, browser: Any
) -> None:
    page, card, errors, thread_id = _batch(served, browser)
    card.locator("select").nth(0).select_option("edit")
    card.locator("textarea.args-editor").fill('{"invoice": "A", "amount": "lots"}')
    card.get_by_role("button", name="Send all verdicts").click()
    expect(page.locator(".notice")).to_contain_text("amount")
    expect(card.get_by_role("button", name="Send all verdicts")).to_be_enabled()
    assert _approvals(served, thread_id) == [] and PAID == []
    card.locator("select").nth(0).select_option("approve")  # the editor goes with the choice
    expect(card.locator("textarea.args-editor")).to_have_count(0)
    assert errors == []
