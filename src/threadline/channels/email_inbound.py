"""The email channel's receiver: an `aiosmtpd` SMTP server in the running event loop.

    RCPT TO agent@example.com           a new conversation: launches a thread
    RCPT TO agent+<token>@example.com   a reply: approves, rejects, answers or continues
    any other recipient                 550, before the message is even sent

A reply is taken only when its token was issued by this channel (a conversation link in
the store names its thread), the token's MAC matches the mail's `From` address (a forwarded
mail has another sender), and what it answers is still open. Everything refused gets a 5xx
reply naming why, and writes nothing; a mail that failed for a passing reason (the store
away) gets a 4xx so the sending server retries. Each mail is acted on once, by Message-ID.
"""

from __future__ import annotations

import asyncio
import logging
import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import make_msgid, parseaddr
from html.parser import HTMLParser
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session
from mailparser_reply import EmailReplyParser

from ..errors import ConfigError, InvalidAction, NotAllowed, ThreadlineError, ThreadNotFound
from ..events import ApprovalRequested, Done, Escalated, HumanRequest, utcnow
from .base import ChannelHub

__all__ = ["Mailbox", "Receiver", "instead", "normalize_address", "reply_text", "verdict"]

log = logging.getLogger("threadline.channels.email")

_VERDICT = re.compile(
    r"^\s*(?:(approved?|yes|lgtm)|(reject(?:ed)?|no|deny|denied))\b[\s:,.!-]*(.*)$",
    re.IGNORECASE | re.DOTALL,
)
_INSTEAD = re.compile(r"^\s*instead\b[\s:,.!-]*(.*\S)", re.IGNORECASE | re.DOTALL)


def normalize_address(value: str) -> str:
    """The bare, lower-case address of a header value (`"Amy" <Amy@X.org>` -> amy@x.org)."""
    return parseaddr(value)[1].strip().lower()


class Refused(Exception):
    """A mail that is not taken: `reply` is the SMTP reply (`550 5.7.1 ...`)."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


def verdict(text: str) -> tuple[bool, str | None] | None:
    """`(approved, comment)` from a reply's first words (`APPROVE`, `reject: too risky`)."""
    found = _VERDICT.match(text)
    if found is None:
        return None
    comment = found.group(3).strip() or None
    return found.group(1) is not None, comment


def instead(text: str) -> str | None:
    """The message of a reply that starts with `INSTEAD` (no verdict: the call is not run
    and the agent reads the message), else None."""
    found = _INSTEAD.match(text)
    return found.group(1).strip() if found else None


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("br", "p", "div", "li", "tr"):
            self.parts.append("\n")


def reply_text(mail: EmailMessage) -> str:
    """What the person wrote: the plain (else HTML) body without quotes and signature."""
    part = mail.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    content = str(part.get_content()) if isinstance(part, EmailMessage) else ""
    if part.get_content_type() == "text/html":
        parser = _Text()
        parser.feed(content)
        content = "".join(parser.parts)
    content = content.replace("\r\n", "\n")
    replies = EmailReplyParser(languages=["en"]).read(text=content).replies
    return str(replies[0].body if replies else content).strip()


class Mailbox(Protocol):
    """The address a receiver takes mail for and the checks it applies (`EmailChannel` is
    one); declared here so the receiver sits below the channel that starts it."""

    address: str
    domain: str
    agent: str

    def parse_token(self, rcpt: str) -> str | None: ...

    def check_token(self, token: str, thread_id: str, sender: str) -> int | None: ...

    def may_launch(self, sender: str) -> bool: ...

    def responder(self, identity: str) -> str | None: ...


class Receiver:
    """The SMTP server of a `Mailbox` (an `EmailChannel`), acting through a `ChannelHub`."""

    def __init__(self, channel: Mailbox, hub: ChannelHub) -> None:
        self.channel = channel
        self.hub = hub
        self.port: int | None = None
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self, hostname=self.channel.domain, loop=loop, data_size_limit=1 << 20),
            host=host,
            port=port,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("email receiver for %s on %s:%s", self.channel.address, host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # -- aiosmtpd hooks (their names are aiosmtpd's) ---------------------------------------

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        ours = normalize_address(address)
        if ours != self.channel.address and self.channel.parse_token(ours) is None:
            return "550 5.1.1 no such mailbox here"
        if envelope.rcpt_tos:
            return "452 4.5.3 one recipient per mail, please"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        data = raw if isinstance(raw, bytes) else raw.encode()
        try:
            return await self.receive(data, str(envelope.rcpt_tos[0]))
        except Refused as exc:
            return exc.reply
        except Exception:
            log.exception("could not take a mail to %s", envelope.rcpt_tos)
            return "451 4.3.0 could not take this mail now; try again later"

    # -- acting on a mail ----------------------------------------------------------------

    async def receive(self, data: bytes, rcpt: str) -> str:
        """Act on one mail to `rcpt`; the SMTP reply. Raises Refused."""
        mail = BytesParser(policy=policy.default).parsebytes(data)
        sender = normalize_address(str(mail.get("From", "")))
        if not sender:
            raise Refused("550 5.7.1 a mail needs a From address")
        message_id = str(mail.get("Message-ID") or "").strip()
        token = self.channel.parse_token(rcpt)
        if token is None:
            return await self._launch(mail, sender, message_id)
        return await self._reply(mail, sender, message_id, token)

    async def _first_time(self, message_id: str) -> bool:
        if not message_id:
            return True
        return await self.hub.deliveries.remember(f"email:{message_id}", at=utcnow())

    async def _launch(self, mail: EmailMessage, sender: str, message_id: str) -> str:
        if not self.channel.may_launch(sender):
            raise Refused(f"550 5.7.1 {sender} may not start conversations here")
        subject = str(mail.get("Subject") or "").strip()
        body = reply_text(mail)
        text = f"{subject}\n\n{body}".strip() if body else subject
        if not text:
            raise Refused("550 5.6.0 the mail is empty: write what you need")
        message_id = message_id or make_msgid(domain=self.channel.domain)
        if not await self._first_time(message_id):
            return "250 OK (already received)"
        references = str(mail.get("References") or "").split()
        thread_id = await self.hub.launch(
            self.channel.agent,
            text,
            channel="email",
            sender=self.channel.responder(sender) or sender,
            conversation={
                "to": sender,
                "subject": subject,
                "message_id": message_id,
                "references": " ".join([*references, message_id]),
            },
        )
        return f"250 OK thread {thread_id}"

    async def _reply(self, mail: EmailMessage, sender: str, message_id: str, token: str) -> str:
        thread_id = await self.hub.outbox.linked("email", f"token:{token}")
        seq = self.channel.check_token(token, thread_id, sender) if thread_id else None
        if thread_id is None or seq is None:
            raise Refused(
                "550 5.7.1 this reply address was not issued to you: reply from the "
                "address the mail was sent to (a forwarded mail cannot answer)"
            )
        if mail.get("Resent-From"):
            raise Refused("550 5.7.1 a redirected mail cannot answer: reply to it yourself")
        text = reply_text(mail)
        if not text:
            raise Refused("550 5.6.0 the reply is empty (quoted text is not read)")
        thread = await self.hub.store.load(thread_id)
        event = thread.events[seq] if seq < len(thread.events) else None
        if not await self._first_time(message_id):
            return "250 OK (already received)"
        try:
            await self.hub.act(thread_id, lambda: self._act(thread_id, event, sender, text))
        except (InvalidAction, NotAllowed, ThreadNotFound, ConfigError) as exc:
            if message_id:
                await self.hub.deliveries.forget(f"email:{message_id}")
            raise Refused(f"550 5.7.1 not taken: {exc}") from None
        except ThreadlineError:
            if message_id:
                await self.hub.deliveries.forget(f"email:{message_id}")
            raise
        return f"250 OK thread {thread_id}"

    async def _act(self, thread_id: str, event: Any, sender: str, text: str) -> None:
        name = self.channel.responder(sender)
        runtime = self.hub.runtime
        if isinstance(event, ApprovalRequested):
            if name is None:
                raise NotAllowed(f"{sender} is not an approver here")
            message = instead(text)
            if message is not None:
                await runtime.respond_instead(
                    thread_id, event.call_id, message, by=name, channel="email"
                )
                return
            decision = verdict(text)
            if decision is None:
                raise InvalidAction(
                    "start the reply with APPROVE, REJECT and why, or INSTEAD and your "
                    "message to the agent"
                )
            approved, comment = decision
            await runtime.approve(
                thread_id,
                event.call_id,
                approved=approved,
                comment=comment,
                by=name,
                channel="email",
            )
        elif isinstance(event, HumanRequest):
            if event.responders and name not in event.responders:
                raise NotAllowed(f"only {', '.join(event.responders)} may answer this")
            await runtime.respond(
                thread_id, event.request_id, text, by=name or sender, channel="email"
            )
        elif isinstance(event, Done | Escalated):
            await runtime.message(thread_id, text, sender=name or sender, channel="email")
        else:
            raise InvalidAction("this mail does not ask for a reply")
