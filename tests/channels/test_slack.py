"""Slack end to end: real signed HTTP requests to a real uvicorn server on loopback.

Slack cannot be reached from here: the channel's outbound Web API calls go through the real
`slack_sdk` `AsyncWebClient`, whose `base_url` points at a recorded-response HTTP server on
loopback (`slack_api.py`) that records each call and answers as Slack does. Inbound
requests are signed here independently of slack_sdk (v0 HMAC-SHA256 of `v0:ts:body`), as
Slack signs them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from slack_api import SIGNING, SlackAPI, click, mention, post_form, post_json, signed

from server_support import DEFAULT_KEYS, LiveServer, asker, deploy_model, guarded, start_server
from threadline import Agent
from threadline.channels.slack import SlackChannel

RESPONDERS = {"UALICE": "alice", "UBOB": "bob"}


def submit(
    callback: str, meta: str, block: str, value: str, user: str = "UALICE"
) -> dict[str, str]:
    view = {
        "callback_id": callback,
        "private_metadata": meta,
        "state": {"values": {block: {block: {"type": "plain_text_input", "value": value}}}},
    }
    return {"payload": json.dumps({"type": "view_submission", "user": {"id": user}, "view": view})}


def event_count(live: LiveServer, thread_id: str) -> int:
    with sqlite3.connect(live.db_path) as conn:
        (n,) = conn.execute(
            "SELECT COUNT(*) FROM events WHERE thread_id = ?", (thread_id,)
        ).fetchone()
    return int(n)


def events(live: LiveServer, thread_id: str) -> list[dict[str, Any]]:
    return [json.loads(body) for _, body in live.stored_events(thread_id)]


@pytest.fixture
def slack_api() -> Iterator[SlackAPI]:
    api = SlackAPI().start()
    yield api
    api.stop()


def _serve(tmp_path: Path, agents: list[Agent], slack_api: SlackAPI, agent: str) -> LiveServer:
    channel = SlackChannel(
        bot_token="xoxb-test-token",
        signing_secret=SIGNING,
        agent=agent,
        responders=RESPONDERS,
        api_url=slack_api.url,
    )
    return start_server(
        tmp_path, agents, deploy_model(), keys=DEFAULT_KEYS, channels={"slack": channel}
    )


@pytest.fixture
def live(tmp_path: Path, deploybot: Agent, slack_api: SlackAPI) -> Iterator[LiveServer]:
    server = _serve(tmp_path, [deploybot, guarded(deploybot), asker()], slack_api, "deploybot")
    yield server
    server.stop()


def _thread_of(live: LiveServer) -> str:
    with live.client() as c:
        [item] = c.get("/v1/threads").json()["items"]
    return str(item["id"])


def test_mention_approval_click_tool_runs_answer_in_the_same_thread(
    live: LiveServer, slack_api: SlackAPI
) -> None:
    r = post_json(live.url, "events", mention("<@UBOT> deploy the backend to production"))
    assert r.status_code == 200, r.text
    [approval] = slack_api.wait("chat.postMessage")
    assert approval.token == "xoxb-test-token"
    assert approval.args["channel"] == "CDEV"
    assert approval.args["thread_ts"] == "1700000000.000100"  # in the mention's thread
    actions = approval.args["blocks"][-1]["elements"]
    assert [a["action_id"] for a in actions] == [
        "threadline_approve",
        "threadline_reject",
        "threadline_edit",
        "threadline_instead",
    ]
    assert "deploy_backend" in json.dumps(approval.args["blocks"])
    thread_id = _thread_of(live)
    assert live.wait_status(thread_id, {"awaiting_approval"})["status"] == "awaiting_approval"
    value = actions[0]["value"]
    assert json.loads(value)["thread"] == thread_id

    r = post_form(live.url, "interactions", click("approve", value, ts="1800000000.000001"))
    assert r.status_code == 200, r.text
    assert live.wait_status(thread_id, {"done"})["status"] == "done"
    verdict = next(e for e in events(live, thread_id) if e["kind"] == "approval")
    assert (verdict["by"], verdict["channel"], verdict["approved"]) == ("alice", "slack", True)
    result = [e for e in events(live, thread_id) if e["kind"] == "tool_result"][-1]
    assert result["result"] == "backend v1.5.0 deployed to production"

    [update] = slack_api.wait("chat.update")
    assert update.args["ts"] == "1800000000.000001" and update.args["channel"] == "CDEV"
    assert update.args["text"] == "approved by alice in Slack"
    assert "threadline_approve" not in json.dumps(update.args["blocks"])  # buttons gone
    posts = slack_api.wait("chat.postMessage", 2)
    answer = posts[1]
    assert answer.args["text"] == "Deployed v1.5.0 to production."
    assert answer.args["thread_ts"] == "1700000000.000100"  # the same Slack thread
    # Slack delivers the same event again (a retry with a new signature): nothing new.
    assert post_json(live.url, "events", mention("<@UBOT> deploy it")).status_code == 200
    time.sleep(0.3)
    with live.client() as c:
        assert len(c.get("/v1/threads").json()["items"]) == 1


def test_forged_stale_and_replayed_requests_are_refused_and_change_nothing(
    live: LiveServer, slack_api: SlackAPI
) -> None:
    payload = mention("<@UBOT> deploy the backend to production")
    assert post_json(live.url, "events", payload, secret="not-the-secret").status_code == 401
    assert post_json(live.url, "events", payload, at=time.time() - 301).status_code == 401
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", **signed(body)}
    unsigned = httpx.post(f"{live.url}/v1/channels/slack/events", content=body)
    assert unsigned.status_code == 401
    tampered = httpx.post(
        f"{live.url}/v1/channels/slack/events",
        content=body.replace(b"CDEV", b"CXXX"),
        headers=headers,
    )
    assert tampered.status_code == 401
    time.sleep(0.3)
    with live.client() as c:
        assert c.get("/v1/threads").json()["items"] == []
    assert slack_api.calls == []
    first = httpx.post(f"{live.url}/v1/channels/slack/events", content=body, headers=headers)
    assert first.status_code == 200
    replayed = httpx.post(f"{live.url}/v1/channels/slack/events", content=body, headers=headers)
    assert replayed.status_code == 409
    assert "replayed" in replayed.json()["detail"]
    slack_api.wait("chat.postMessage")
    thread_id = _thread_of(live)
    live.wait_status(thread_id, {"awaiting_approval"})
    before = event_count(live, thread_id)
    value = slack_api.of("chat.postMessage")[0].args["blocks"][-1]["elements"][0]["value"]
    # A forged click, a stale one, and a replay of a click that was refused: all refused.
    assert (
        post_form(live.url, "interactions", click("approve", value), secret="x").status_code == 401
    )
    stale = post_form(live.url, "interactions", click("approve", value), at=time.time() - 600)
    assert stale.status_code == 401
    # Someone Slack knows but who is no responder: told so, nothing written.
    assert (
        post_form(live.url, "interactions", click("approve", value, user="UMALLORY")).status_code
        == 200
    )
    [note] = slack_api.wait("chat.postEphemeral")
    assert note.args["user"] == "UMALLORY" and "not an approver" in note.args["text"]
    assert event_count(live, thread_id) == before
    assert live.wait_status(thread_id, {"awaiting_approval"})["status"] == "awaiting_approval"


def test_only_the_approvals_own_approvers_may_click(live: LiveServer, slack_api: SlackAPI) -> None:
    thread = live.launch(agent="guarded")  # from the API: only alice may approve
    call_id = thread["pending_approvals"][0]["call_id"]
    value = json.dumps({"thread": thread["id"], "call": call_id})
    before = event_count(live, thread["id"])
    assert (
        post_form(live.url, "interactions", click("approve", value, user="UBOB")).status_code == 200
    )
    [note] = slack_api.wait("chat.postEphemeral")
    assert "bob may not answer" in note.args["text"]
    assert event_count(live, thread["id"]) == before
    assert post_form(live.url, "interactions", click("approve", value)).status_code == 200
    assert live.wait_status(thread["id"], {"done"})["status"] == "done"
    # The second click on a decided approval: told who won, nothing written.
    done = event_count(live, thread["id"])
    assert post_form(live.url, "interactions", click("approve", value)).status_code == 200
    notes = slack_api.wait("chat.postEphemeral", 2)
    assert "not awaiting approval" in notes[1].args["text"]
    assert event_count(live, thread["id"]) == done


def test_reject_with_comment_and_edit_through_modals(live: LiveServer, slack_api: SlackAPI) -> None:
    thread = live.launch()
    call_id = thread["pending_approvals"][0]["call_id"]
    value = json.dumps({"thread": thread["id"], "call": call_id})
    assert post_form(live.url, "interactions", click("edit", value)).status_code == 200
    [opened] = slack_api.wait("views.open")
    view = opened.args["view"]
    assert opened.args["trigger_id"] == "trigger-1" and view["callback_id"] == "threadline_edit"
    initial = json.loads(view["blocks"][0]["element"]["initial_value"])
    assert initial == {"tag": "v1.5.0", "environment": "production"}
    meta = view["private_metadata"]
    bad = post_form(live.url, "interactions", submit("threadline_edit", meta, "arguments", "{nope"))
    assert bad.json()["response_action"] == "errors"
    wrong = json.dumps({"tag": "v9.9.9", "environment": "production"})
    refused = post_form(
        live.url, "interactions", submit("threadline_edit", meta, "arguments", wrong)
    )
    assert "arguments" in refused.json()["errors"]  # the tool's schema refused the tag
    assert live.wait_status(thread["id"], {"awaiting_approval"})["status"] == "awaiting_approval"

    assert post_form(live.url, "interactions", click("reject", value)).status_code == 200
    reject_view = slack_api.wait("views.open", 2)[1].args["view"]
    assert reject_view["callback_id"] == "threadline_reject"
    r = post_form(
        live.url,
        "interactions",
        submit("threadline_reject", reject_view["private_metadata"], "comment", "freeze week"),
    )
    assert r.status_code == 200 and r.json() == {}
    assert live.wait_status(thread["id"], {"done"})["status"] == "done"
    verdict = next(e for e in events(live, thread["id"]) if e["kind"] == "approval")
    assert (verdict["approved"], verdict["comment"], verdict["by"]) == (
        False,
        "freeze week",
        "alice",
    )


def test_respond_instead_through_its_modal(live: LiveServer, slack_api: SlackAPI) -> None:
    assert post_json(live.url, "events", mention("<@UBOT> deploy the backend")).status_code == 200
    [approval] = slack_api.wait("chat.postMessage")
    thread_id = _thread_of(live)
    first = live.wait_status(thread_id, {"awaiting_approval"})["pending_approvals"][0]["call_id"]
    value = approval.args["blocks"][-1]["elements"][-1]["value"]
    clicked = post_form(live.url, "interactions", click("instead", value, ts="1800.1"))
    assert clicked.status_code == 200, clicked.text
    [opened] = slack_api.wait("views.open")
    view = opened.args["view"]
    assert view["callback_id"] == "threadline_instead"
    meta = view["private_metadata"]
    stranger = submit("threadline_instead", meta, "message", "no", user="UEVE")
    assert "message" in post_form(live.url, "interactions", stranger).json()["errors"]
    empty = submit("threadline_instead", meta, "message", "  ")
    assert "message" in post_form(live.url, "interactions", empty).json()["errors"]
    text = "Use <!channel> staging first & tell me"
    r = post_form(live.url, "interactions", submit("threadline_instead", meta, "message", text))
    assert r.status_code == 200 and r.json() == {}
    # The call did not run; the model read the message and asked again (a new call).
    again = live.wait_status(thread_id, {"awaiting_approval"})
    assert [p["call_id"] for p in again["pending_approvals"]] != [first]
    kinds = [e["kind"] for e in events(live, thread_id)]
    assert "approval" not in kinds and "tool_started" not in kinds
    instead = next(e for e in events(live, thread_id) if e["kind"] == "responded_instead")
    assert (instead["by"], instead["channel"], instead["text"]) == ("alice", "slack", text)
    [update] = slack_api.wait("chat.update")
    assert update.args["text"] == "answered with a message instead by alice in Slack"
    shown = json.dumps(update.args["blocks"])
    assert "&lt;!channel&gt; staging first &amp; tell me" in shown  # escaped for mrkdwn
    assert "threadline_approve" not in shown


def test_a_slash_command_launches_and_answers_in_its_thread(
    live: LiveServer, slack_api: SlackAPI
) -> None:
    form = {
        "command": "/deploy",
        "text": "deploy the backend to production",
        "user_id": "UAMY",
        "channel_id": "CDEV",
        "trigger_id": "t",
    }
    r = post_form(live.url, "commands", form)
    assert r.status_code == 200 and r.json()["response_type"] == "ephemeral"
    root, approval = slack_api.wait("chat.postMessage", 2)[:2]
    assert root.args["text"] == "<@UAMY> asked: deploy the backend to production"
    assert approval.args["thread_ts"] == "1800000000.000001"  # under the root post
    empty = post_form(live.url, "commands", {**form, "text": ""})
    assert "Usage: /deploy" in empty.json()["text"]


def test_url_verification_answers_the_challenge(live: LiveServer) -> None:
    r = post_json(live.url, "events", {"type": "url_verification", "challenge": "c-123"})
    assert r.json() == {"challenge": "c-123"}


def test_a_question_is_answered_by_a_reply_in_the_slack_thread(
    tmp_path: Path, deploybot: Agent, slack_api: SlackAPI
) -> None:
    live = _serve(tmp_path, [asker()], slack_api, "asker")
    try:
        dm = {
            "type": "event_callback",
            "event": {
                "type": "message",
                "channel_type": "im",
                "user": "UAMY",
                "text": "help me choose",
                "channel": "DAMY",
                "ts": "1700000001.000100",
            },
        }
        assert post_json(live.url, "events", dm).status_code == 200
        [question] = slack_api.wait("chat.postMessage")
        assert "Which environment?" in question.args["text"]
        assert question.args["thread_ts"] == "1700000001.000100"
        reply = {
            "type": "event_callback",
            "event": {
                "type": "message",
                "channel_type": "im",
                "user": "UAMY",
                "text": "staging",
                "channel": "DAMY",
                "ts": "1700000002.000100",
                "thread_ts": "1700000001.000100",
            },
        }
        assert post_json(live.url, "events", reply).status_code == 200
        thread_id = _thread_of(live)
        assert live.wait_status(thread_id, {"done"})["status"] == "done"
        answer = next(e for e in events(live, thread_id) if e["kind"] == "human_response")
        assert (answer["text"], answer["by"], answer["channel"]) == (
            "staging",
            "slack:UAMY",
            "slack",
        )
        posts = slack_api.wait("chat.postMessage", 2)
        assert posts[1].args["text"] == "Thanks: staging"
        assert posts[1].args["thread_ts"] == "1700000001.000100"
        [update] = slack_api.wait("chat.update")
        assert update.args["text"] == "answered by slack:UAMY in Slack"
    finally:
        live.stop()


def test_a_thread_this_server_does_not_serve_is_not_acted_on(
    live: LiveServer, slack_api: SlackAPI
) -> None:
    """Approving it would leave it running with nothing to advance it: refused."""
    import asyncio

    from threadline.events import ApprovalRequested, Thread, ToolCall, UserMessage, utcnow
    from threadline.stores import SQLiteStore

    at = utcnow()
    thread = Thread(
        "th_elsewhere",
        "elsewhere",
        [
            UserMessage(seq=0, at=at, text="go", channel="slack"),
            ToolCall(seq=1, at=at, call_id="c1", tool="go", version="1", arguments={}),
            ApprovalRequested(seq=2, at=at, call_id="c1", tool="go", arguments={}),
        ],
    )

    async def create() -> None:
        async with SQLiteStore(live.db_path) as store:
            await store.create(thread)

    asyncio.run(create())
    value = json.dumps({"thread": "th_elsewhere", "call": "c1"})
    assert post_form(live.url, "interactions", click("approve", value)).status_code == 200
    [note] = slack_api.wait("chat.postEphemeral")
    assert "does not serve" in note.args["text"]
    assert event_count(live, "th_elsewhere") == 3
