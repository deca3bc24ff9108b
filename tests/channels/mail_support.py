"""Real SMTP on loopback for the email channel's tests: a mail server that keeps what
Threadline sends (aiosmtpd), and mails sent to Threadline's own receiver (aiosmtplib)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import make_msgid
from typing import Any, cast

import aiosmtplib
from aiosmtpd.controller import Controller

from server_support import free_port


@dataclass
class MailServer:
    """The people's mail server: every mail Threadline sends lands in `inbox`."""

    inbox: list[EmailMessage] = field(default_factory=list)
    port: int = 0
    _controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        mail = BytesParser(policy=policy.default).parsebytes(envelope.original_content)
        self.inbox.append(cast(EmailMessage, mail))
        return "250 OK"

    def start(self) -> MailServer:
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

    def wait(self, count: int, timeout: float = 20) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.inbox) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.inbox)


def mail(
    sender: str,
    to: str,
    subject: str,
    body: str,
    *,
    reply_to: EmailMessage | None = None,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    """A mail as a person's client writes it (a reply quotes the mail it answers)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain=sender.split("@")[-1])
    if reply_to is not None:
        message["In-Reply-To"] = reply_to["Message-ID"]
        refs = str(reply_to.get("References") or "").split()
        message["References"] = " ".join([*refs, reply_to["Message-ID"]])
        quoted = "\n".join("> " + line for line in reply_to.get_content().splitlines())
        body = f"{body}\n\nOn Mon, 5 Jan 2026 at 09:00, Threadline wrote:\n{quoted}\n"
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body)
    return message


def send(message: EmailMessage, port: int) -> None:
    """Deliver to Threadline's receiver on loopback (raises on a 4xx/5xx reply)."""
    asyncio.run(aiosmtplib.send(message, hostname="127.0.0.1", port=port, timeout=20))
