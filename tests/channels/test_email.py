"""Email end to end on real SMTP servers on loopback, both ways: people's mails go to
Threadline's aiosmtpd receiver (run by the real uvicorn server's lifespan) through
aiosmtplib, and Threadline's mails go through aiosmtplib to an aiosmtpd mail server that
keeps them."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from mail_support import MailServer, mail, send

from server_support import DEFAULT_KEYS, LiveServer, asker, deploy_model, start_server
from threadline import Agent
from threadline.channels.email import EmailChannel
from threadline.channels.email_inbound import instead, reply_text, verdict

AGENT = "agent@example.com"
SECRET = "a-long-reply-token-secret-for-tests"


@pytest.fixture
def mailbox() -> Iterator[MailServer]:
    server = MailServer().start()
    yield server
    server.stop()


def _serve(tmp_path: Path, agents: list[Agent], mailbox: MailServer, agent: str) -> LiveServer:
    channel = EmailChannel(
        address=AGENT,
        secret=SECRET,
        agent=agent,
        responders={"alice@example.com": "alice"},
        smtp={"hostname": "127.0.0.1", "port": mailbox.port, "timeout": 20},
        listen=("127.0.0.1", 0),
    )
    live = start_server(
        tmp_path, agents, deploy_model(), keys=DEFAULT_KEYS, channels={"email": channel}
    )
    live.email_port = channel.port  # type: ignore[attr-defined]
    return live


def _events(live: LiveServer, thread_id: str) -> list[dict[str, object]]:
    return [json.loads(body) for _, body in live.stored_events(thread_id)]


def _only_thread(live: LiveServer) -> str:
    with live.client() as c:
        [item] = c.get("/v1/threads").json()["items"]
    return str(item["id"])


def test_email_launch_question_reply_answer_in_the_same_conversation(
    tmp_path: Path, mailbox: MailServer
) -> None:
    live = _serve(tmp_path, [asker()], mailbox, "asker")
    try:
        port = live.email_port  # type: ignore[attr-defined]
        first = mail("Amy <amy@customer.org>", AGENT, "Release help", "Please help me release.")
        send(first, port)
        [question] = mailbox.wait(1)
        assert question["To"] == "amy@customer.org"
        assert question["In-Reply-To"] == first["Message-ID"]
        assert question["Subject"] == "Re: Release help"
        assert "Which environment?" in question.get_content()
        reply_to = question["Reply-To"]
        assert reply_to.startswith("agent+") and reply_to.endswith("@example.com")
        thread_id = _only_thread(live)
        assert live.wait_status(thread_id, {"awaiting_human"})["status"] == "awaiting_human"

        # The wrong person (a forward), a made-up token, an unknown mailbox: all refused.
        before = len(live.stored_events(thread_id))
        forwarded = mail("mallory@evil.org", reply_to, "Fwd: Re: Release help", "production")
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            send(forwarded, port)
        assert refused.value.code == 550 and "not issued to you" in refused.value.message
        guessed = mail("amy@customer.org", "agent+7-aaaaaaaaaaaaaaaaaaaa@example.com", "x", "prod")
        with pytest.raises(aiosmtplib.SMTPDataError):
            send(guessed, port)
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            send(mail("amy@customer.org", "someone@example.com", "x", "prod"), port)
        assert len(live.stored_events(thread_id)) == before

        answer = mail(
            "amy@customer.org",
            reply_to,
            "Re: Release help",
            "staging\n\n--\nAmy Example\nCustomer Corp",
            reply_to=question,
        )
        send(answer, port)
        assert live.wait_status(thread_id, {"done"})["status"] == "done"
        response = next(e for e in _events(live, thread_id) if e["kind"] == "human_response")
        assert (response["text"], response["by"], response["channel"]) == (
            "staging",
            "amy@customer.org",
            "email",
        )
        final = mailbox.wait(2)[1]
        assert final.get_content().startswith("Thanks: staging")
        assert final["In-Reply-To"] == first["Message-ID"]
        assert first["Message-ID"] in final["References"]
        assert final["Subject"] == "Re: Release help"
        # The same reply delivered twice (a retrying server) is taken once.
        send(answer, port)
        assert len([e for e in _events(live, thread_id) if e["kind"] == "human_response"]) == 1
    finally:
        live.stop()


@pytest.fixture
def approving(
    tmp_path: Path, mailbox: MailServer, deploybot: Agent
) -> Iterator[tuple[LiveServer, EmailMessage, str]]:
    """A server whose deploybot mails its approvals to alice, and a thread (launched by
    amy's mail) awaiting one: the server, the approval mail, the thread id."""
    routed = dataclasses.replace(deploybot, routes={"approval": "email:alice@example.com"})
    live = _serve(tmp_path, [routed], mailbox, "deploybot")
    try:
        port = live.email_port  # type: ignore[attr-defined]
        send(mail("amy@customer.org", AGENT, "Deploy", "deploy the backend to production"), port)
        [approval] = mailbox.wait(1)
        thread_id = _only_thread(live)
        live.wait_status(thread_id, {"awaiting_approval"})
        yield live, approval, thread_id
    finally:
        live.stop()


def _reply(live: LiveServer, approval: EmailMessage, text: str) -> None:
    """Alice's reply to the approval mail, delivered to the server's receiver."""
    reply = mail("alice@example.com", approval["Reply-To"], "Re", text, reply_to=approval)
    send(reply, live.email_port)  # type: ignore[attr-defined]


def test_approvals_by_email_only_count_from_responders(
    approving: tuple[LiveServer, EmailMessage, str], mailbox: MailServer
) -> None:
    live, approval, thread_id = approving
    assert approval["To"] == "alice@example.com"
    assert "deploy_backend" in approval.get_content()
    before = len(live.stored_events(thread_id))
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        _reply(live, approval, "hmm, maybe?")
    assert "APPROVE" in refused.value.message
    assert len(live.stored_events(thread_id)) == before
    _reply(live, approval, "Approve")
    assert live.wait_status(thread_id, {"done"})["status"] == "done"
    verdict_event = next(e for e in _events(live, thread_id) if e["kind"] == "approval")
    assert (verdict_event["by"], verdict_event["channel"]) == ("alice", "email")
    mails = mailbox.wait(2)
    final = mails[1]  # alice, who approved by mail, gets no "approved by alice" mail
    assert final["To"] == "amy@customer.org"
    assert final.get_content().startswith("Deployed v1.5.0 to production.")


def test_a_reply_starting_with_instead_is_a_message_in_place_of_a_verdict(
    approving: tuple[LiveServer, EmailMessage, str],
) -> None:
    live, approval, thread_id = approving
    assert "INSTEAD" in approval.get_content()
    first = live.wait_status(thread_id, {"awaiting_approval"})["pending_approvals"]
    _reply(live, approval, "Instead: staging first, please.\n\n-- \nAlice")
    again = live.wait_status(thread_id, {"awaiting_approval"})
    assert again["pending_approvals"][0]["call_id"] != first[0]["call_id"]
    events = _events(live, thread_id)
    kinds = [e["kind"] for e in events]
    assert "approval" not in kinds and "tool_started" not in kinds
    instead = next(e for e in events if e["kind"] == "responded_instead")
    assert (instead["by"], instead["channel"]) == ("alice", "email")
    assert instead["text"] == "staging first, please."  # the signature is stripped


def test_verdict_words() -> None:
    assert verdict("APPROVE") == (True, None)
    assert verdict("  yes, go ahead") == (True, "go ahead")
    assert verdict("Reject: freeze week\nthanks") == (False, "freeze week\nthanks")
    assert verdict("no") == (False, None)
    assert verdict("maybe later") is None
    assert verdict("approvedly") is None
    assert instead("INSTEAD: try staging") == "try staging"
    assert instead("instead\n\nwait for Monday") == "wait for Monday"
    assert instead("INSTEAD") is None and instead("insteadly go") is None


def test_reply_text_strips_quotes_and_signatures_and_reads_html() -> None:
    question = mail("agent@example.com", "amy@customer.org", "Q", "Which environment?")
    plain = mail("amy@customer.org", AGENT, "Re: Q", "staging\n\n-- \nAmy", reply_to=question)
    assert reply_text(plain) == "staging"
    html = mail("amy@customer.org", AGENT, "Re: Q", "staging")
    html.add_alternative("<p>prod<br>please</p><blockquote>old</blockquote>", subtype="html")
    assert reply_text(html) == "staging"  # the plain part is preferred
    only_html = mail("amy@customer.org", AGENT, "Re: Q", "x")
    only_html.set_content("<div>prod</div><div>please</div>", subtype="html")
    assert reply_text(only_html) == "prod\nplease"
