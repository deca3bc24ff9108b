"""One approval sent to Slack and by email: the first valid answer wins and the other
place is updated. A real uvicorn server on loopback runs both channels; Slack's Web API is
the recorded-response server of `slack_api.py` (Slack cannot be reached from here; the
calls go through the real slack_sdk client), mail goes over real SMTP on loopback."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest
from mail_support import MailServer, mail, send
from slack_api import SIGNING, SlackAPI, click, mention, post_form, post_json

from server_support import DEFAULT_KEYS, LiveServer, deploy_model, start_server
from threadline import Agent
from threadline.channels.email import EmailChannel
from threadline.channels.slack import SlackChannel


@pytest.fixture
def both(
    tmp_path: Path, deploybot: Agent
) -> Iterator[tuple[LiveServer, SlackAPI, MailServer, int]]:
    slack_api, mailbox = SlackAPI().start(), MailServer().start()
    agent = dataclasses.replace(
        deploybot, routes={"approval": ["origin", "email:alice@example.com"]}
    )
    slack = SlackChannel(
        bot_token="xoxb-t",
        signing_secret=SIGNING,
        agent="deploybot",
        responders={"UALICE": "alice", "UBOB": "bob"},
        api_url=slack_api.url,
    )
    email = EmailChannel(
        address="deploybot@example.com",
        secret="another-long-reply-token-secret",
        agent="deploybot",
        responders={"alice@example.com": "alice"},
        smtp={"hostname": "127.0.0.1", "port": mailbox.port, "timeout": 20},
        listen=("127.0.0.1", 0),
    )
    live = start_server(
        tmp_path,
        [agent],
        deploy_model(),
        keys=DEFAULT_KEYS,
        channels={"slack": slack, "email": email},
    )
    try:
        yield live, slack_api, mailbox, email.port or 0
    finally:
        live.stop()
        slack_api.stop()
        mailbox.stop()


def test_first_answer_wins_and_the_other_channel_is_updated(
    both: tuple[LiveServer, SlackAPI, MailServer, int],
) -> None:
    live, slack_api, mailbox, port = both
    with live.client() as c:
        listed = {ch["name"] for ch in c.get("/v1/channels").json()["items"]}
    assert {"slack", "email"} <= listed
    assert post_json(live.url, "events", mention("<@UBOT> deploy the backend to production"))
    [in_slack] = slack_api.wait("chat.postMessage")
    [by_mail] = mailbox.wait(1)
    assert by_mail["To"] == "alice@example.com" and "deploy_backend" in by_mail.get_content()
    value = in_slack.args["blocks"][-1]["elements"][0]["value"]
    thread_id = json.loads(value)["thread"]

    send(mail("alice@example.com", by_mail["Reply-To"], "Re", "approve", reply_to=by_mail), port)
    assert live.wait_status(thread_id, {"done"})["status"] == "done"
    [update] = slack_api.wait("chat.update")
    assert update.args["ts"] == "1800000000.000001"
    assert update.args["text"] == "approved by alice in email"

    # Bob clicks the (stale) button in Slack afterwards: refused, told why, nothing written.
    before = len(live.stored_events(thread_id))
    assert (
        post_form(live.url, "interactions", click("approve", value, user="UBOB")).status_code == 200
    )
    [note] = slack_api.wait("chat.postEphemeral")
    assert "not awaiting approval" in note.args["text"]
    assert len(live.stored_events(thread_id)) == before
    verdicts = [json.loads(b) for _, b in live.stored_events(thread_id)]
    assert [v["by"] for v in verdicts if v["kind"] == "approval"] == ["alice"]
    answer = slack_api.wait("chat.postMessage", 2)[1]
    assert answer.args["thread_ts"] == "1700000000.000100"
    assert answer.args["text"] == "Deployed v1.5.0 to production."


def test_approved_in_slack_the_email_conversation_is_told_and_a_late_mail_refused(
    both: tuple[LiveServer, SlackAPI, MailServer, int],
) -> None:
    live, slack_api, mailbox, port = both
    post_json(live.url, "events", mention("<@UBOT> deploy the backend to production"))
    [in_slack] = slack_api.wait("chat.postMessage")
    [by_mail] = mailbox.wait(1)
    value = in_slack.args["blocks"][-1]["elements"][0]["value"]
    thread_id = json.loads(value)["thread"]
    assert (
        post_form(live.url, "interactions", click("approve", value, user="UBOB")).status_code == 200
    )
    assert live.wait_status(thread_id, {"done"})["status"] == "done"
    told = mailbox.wait(2)[1]
    assert told["To"] == "alice@example.com"
    assert told["In-Reply-To"] == by_mail["Message-ID"]
    assert told.get_content().startswith("approved by bob in Slack")
    before = len(live.stored_events(thread_id))
    late = mail("alice@example.com", by_mail["Reply-To"], "Re", "approve", reply_to=by_mail)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        send(late, port)
    assert "not awaiting approval" in refused.value.message
    assert len(live.stored_events(thread_id)) == before
