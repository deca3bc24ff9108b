"""threadline.wire: the request and response bodies shared by the server and the client."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest
from pydantic import ValidationError

from threadline.events import (
    ApprovalRequested,
    Done,
    HumanRequest,
    ModelCall,
    Status,
    Thread,
    ToolCall,
    UserMessage,
    utcnow,
)
from threadline.stores.base import Page, ThreadSummary
from threadline.wire import (
    MAX_TEXT,
    ApprovalBody,
    LaunchBody,
    ThreadOut,
    ThreadPage,
    WebhookDelivery,
    thread_out,
)


def _thread(*events: object) -> Thread:
    thread = Thread("th_1", "deploybot", metadata={"channel": "cli"})
    for event in events:
        thread.append(event)  # type: ignore[arg-type]
    return thread


def test_thread_out_shows_a_pending_approval_with_its_approvers_and_usage() -> None:
    now = utcnow()
    thread = _thread(
        UserMessage(seq=0, at=now, text="deploy"),
        ModelCall(seq=1, at=now, model="m", input_tokens=30, output_tokens=7, cost_usd=0.01),
        ToolCall(seq=2, at=now, call_id="c1", tool="deploy", version="1", arguments={"tag": "v1"}),
        ApprovalRequested(
            seq=3,
            at=now + timedelta(seconds=1),
            call_id="c1",
            tool="deploy",
            arguments={"tag": "v1"},
            approvers=("alice",),
        ),
    )
    view = thread_out(thread)
    assert view.status == Status.AWAITING_APPROVAL
    assert [(p.call_id, p.tool, p.arguments, p.approvers) for p in view.pending_approvals] == [
        ("c1", "deploy", {"tag": "v1"}, ["alice"])
    ]
    assert view.question is None and view.result is None
    assert view.updated_at == now + timedelta(seconds=1)
    assert (view.usage.model_calls, view.usage.input_tokens, view.usage.output_tokens) == (1, 30, 7)
    # What the server sends is what the client reads back.
    assert ThreadOut.model_validate_json(view.model_dump_json()) == view


def test_thread_out_shows_the_open_question_and_the_result() -> None:
    now = utcnow()
    asking = _thread(
        UserMessage(seq=0, at=now, text="deploy"),
        HumanRequest(seq=1, at=now, request_id="r1", question="Which environment?"),
    )
    view = thread_out(asking)
    assert view.status == Status.AWAITING_HUMAN
    assert view.question is not None
    assert (view.question.request_id, view.question.question) == ("r1", "Which environment?")
    done = _thread(UserMessage(seq=0, at=now, text="hi"), Done(seq=1, at=now, message="bye"))
    assert thread_out(done).result == "bye"


def test_a_store_page_becomes_a_thread_page() -> None:
    now = utcnow()
    summary = ThreadSummary(
        id="th_9",
        agent="a",
        status=Status.DONE,
        next_seq=4,
        created_at=now,
        updated_at=now,
        metadata={"k": 1},
        lease_owner="w",
    )
    page = ThreadPage.from_page(Page([summary], "next"))
    assert page.cursor == "next"
    assert page.items[0].model_dump() == {
        "id": "th_9",
        "agent": "a",
        "status": Status.DONE,
        "next_seq": 4,
        "created_at": now,
        "updated_at": now,
        "metadata": {"k": 1},
    }


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (LaunchBody, {"agent": "a", "message": "hi", "surprise": 1}),
        (LaunchBody, {"agent": "", "message": "hi"}),
        (LaunchBody, {"agent": "a", "message": "x" * (MAX_TEXT + 1)}),
        (LaunchBody, {"agent": "a", "message": "hi", "wait_timeout": 301}),
        (ApprovalBody, {}),
        (WebhookDelivery, {"type": "vote", "thread_id": "th_1"}),
    ],
)
def test_bodies_are_bounded_and_strict(model: type, body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(body)


def test_wire_imports_no_server_framework() -> None:
    code = (
        "import sys, json, threadline.wire, threadline.client; "
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.partition('.')[0] in ('fastapi', 'starlette', 'uvicorn'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout) == []
