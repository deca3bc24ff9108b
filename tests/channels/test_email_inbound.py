"""channels/email_inbound.py, the parts that read a reply (the SMTP receiver itself runs in
tests/channels/test_email.py): addresses, verdicts, `INSTEAD`, and what the person wrote
without the quoted mail below it."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from threadline.channels.email_inbound import instead, normalize_address, reply_text, verdict


def test_addresses_are_bare_and_lower_case() -> None:
    assert normalize_address('"Amy Pond" <Amy@Example.ORG>') == "amy@example.org"
    assert normalize_address(" bo@x.org ") == "bo@x.org"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("APPROVE", (True, None)),
        ("approved, go ahead", (True, "go ahead")),
        ("LGTM!", (True, None)),
        ("yes", (True, None)),
        ("reject: too risky on a Friday", (False, "too risky on a Friday")),
        ("No. Use staging first", (False, "Use staging first")),
        ("denied", (False, None)),
        ("approvers are on holiday", None),  # a word that merely starts like one
        ("I think we should wait", None),
        ("", None),
    ],
)
def test_a_verdict_is_read_from_the_first_words(
    text: str, expected: tuple[bool, str | None] | None
) -> None:
    assert verdict(text) == expected


def test_instead_carries_a_message_for_the_agent() -> None:
    assert instead("INSTEAD: deploy to staging first") == "deploy to staging first"
    assert instead("instead") is None  # nothing to say
    assert instead("approve instead of waiting") is None


def _mail(plain: str | None = None, html: str | None = None) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "amy@example.org"
    if plain is not None:
        mail.set_content(plain)
    if html is not None:
        if plain is None:
            mail.set_content(html, subtype="html")
        else:
            mail.add_alternative(html, subtype="html")
    return mail


def test_the_reply_is_what_the_person_wrote_above_the_quote() -> None:
    quoted = (
        "reject: not today\n\n"
        "On Mon, 30 Nov 2026 at 10:00, Agent <agent@x.org> wrote:\n"
        "> deploybot asks to run deploy_backend\n> APPROVE or REJECT\n"
    )
    assert reply_text(_mail(quoted)) == "reject: not today"
    html = "<div>approve<br>looks fine</div><p>thanks</p>"
    assert reply_text(_mail(html=html)).splitlines() == ["approve", "looks fine", "thanks"]
    assert reply_text(_mail("plain wins", "<p>html loses</p>")) == "plain wins"
    empty = BytesParser(policy=policy.default).parsebytes(b"From: a@x.org\r\n\r\n")
    assert isinstance(empty, EmailMessage) and reply_text(empty) == ""  # headers only
