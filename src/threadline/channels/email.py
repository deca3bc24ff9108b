"""Email: out over SMTP (`aiosmtplib`), in through an SMTP receiver (`aiosmtpd`), no
third-party service needed (`pip install 'threadline[channels]'`).

A mail to the agent's address (`THREADLINE_EMAIL_ADDRESS=agent@example.com`) launches a
thread; everything the thread says comes back in the same conversation (`In-Reply-To` and
`References` name the launching mail, the subject is kept). Every mail Threadline sends
carries a signed reply address, `agent+<token>@example.com`, where

    token = <seq>-<HMAC(secret, thread | seq | recipient)[:20], base32>

binds the reply to one thread, one event (the approval, question or answer mailed) and one
recipient. A reply counts only if it comes to a token address Threadline issued, and from
the address that token was issued to: a forwarded mail (another `From`) or a guessed token
cannot approve or answer anything. Quoted text and signatures are stripped
(`mail-parser-reply`) before the answer reaches the thread.

The receiver (`email_inbound.py`) runs inside `threadline serve` when
`THREADLINE_EMAIL_LISTEN=host:port` is set, or alone as `threadline channels email`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import TYPE_CHECKING, Any, Literal

import aiosmtplib
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from ..errors import ChannelError, ConfigError
from .base import ChannelHub, Destination, Notice
from .email_inbound import Receiver, normalize_address
from .registry import ChannelSettings

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = ["EmailChannel", "EmailSettings", "from_env", "normalize_address"]

_TOKEN = re.compile(r"([0-9]{1,9})-([a-z2-7]{20})")
_ADDRESS = re.compile(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+")


class EmailSettings(ChannelSettings):
    """`THREADLINE_EMAIL_*`: the agent's address, SMTP both ways, the token secret."""

    model_config = SettingsConfigDict(env_prefix="THREADLINE_EMAIL_", extra="ignore")

    address: str | None = None
    secret: SecretStr | None = None
    senders: str = "*"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    listen: str = ""


def from_env(agents: Sequence[str]) -> EmailChannel:
    """The email channel from `THREADLINE_EMAIL_*` (see docs/channels.md)."""
    cfg = EmailSettings()
    if not cfg.address or cfg.secret is None:
        raise ConfigError(
            "the email channel needs THREADLINE_EMAIL_ADDRESS (the agent's address) and "
            "THREADLINE_EMAIL_SECRET (signs reply addresses; 32+ random characters)"
        )
    name = cfg.launched_agent(agents)
    host, _, port = cfg.listen.rpartition(":")
    if cfg.listen and not (host and port.isdigit()):
        raise ConfigError(f"THREADLINE_EMAIL_LISTEN={cfg.listen!r} must be host:port")
    return EmailChannel(
        address=cfg.address,
        secret=cfg.secret.get_secret_value(),
        agent=name,
        responders=cfg.responder_names(),
        senders=[s.strip().lower() for s in cfg.senders.split(",") if s.strip()],
        smtp={
            "hostname": cfg.smtp_host,
            "port": cfg.smtp_port,
            "username": cfg.smtp_username,
            "password": cfg.smtp_password.get_secret_value() if cfg.smtp_password else None,
            "start_tls": cfg.smtp_tls == "starttls",
            "use_tls": cfg.smtp_tls == "tls",
        },
        listen=(host, int(port)) if cfg.listen else None,
    )


class EmailChannel:
    """Email as a channel (see the module docstring).

    Args:
        address: the agent's address; reply tokens are `local+token@domain` of it.
        secret: signs reply tokens.
        agent: the agent a new mail launches.
        responders: address -> responder name (who may approve).
        senders: who may launch (`*`, `*@example.com`, or addresses).
        smtp: `aiosmtplib.send` options for the outgoing server.
        listen: (host, port) of the receiver `start` runs; None: no receiver here.
    """

    name = "email"

    def __init__(
        self,
        *,
        address: str,
        secret: str,
        agent: str,
        responders: Mapping[str, str] | None = None,
        senders: Sequence[str] = ("*",),
        smtp: Mapping[str, Any] | None = None,
        listen: tuple[str, int] | None = None,
    ) -> None:
        address = normalize_address(address)
        if not _ADDRESS.fullmatch(address):
            raise ConfigError(f"email channel: {address!r} is not an email address")
        if len(secret) < 16:
            raise ConfigError("email channel: the reply-token secret needs 16+ characters")
        self.address = address
        self.local, self.domain = address.split("@", 1)
        self._secret = secret.encode()
        self.agent = agent
        self.responders = {normalize_address(k): v for k, v in (responders or {}).items()}
        self.senders = [s.lower() for s in senders]
        self.smtp = dict(smtp or {"hostname": "127.0.0.1", "port": 25})
        self.listen = listen
        self._receiver: Receiver | None = None

    # -- the Channel interface ------------------------------------------------------------

    def router(self, hub: ChannelHub) -> APIRouter | None:
        return None  # inbound is SMTP, not HTTP

    def responder(self, identity: str) -> str | None:
        return self.responders.get(normalize_address(identity))

    def destination(self, address: str) -> Destination:
        to = normalize_address(address)
        if not _ADDRESS.fullmatch(to):
            raise ConfigError(f"email route {address!r} is not an email address")
        return Destination(channel="email", address=to, conversation={"to": to})

    async def start(self, hub: ChannelHub) -> None:
        """Run the SMTP receiver in this event loop when `listen` is set."""
        if self.listen is not None and self._receiver is None:
            self._receiver = Receiver(self, hub)
            await self._receiver.start(*self.listen)

    async def stop(self) -> None:
        if self._receiver is not None:
            await self._receiver.stop()
            self._receiver = None

    @property
    def port(self) -> int | None:
        """The receiver's port (when it listens on port 0, the one it got)."""
        return self._receiver.port if self._receiver is not None else None

    # -- reply tokens ---------------------------------------------------------------------

    def token(self, thread_id: str, seq: int, recipient: str) -> str:
        """The reply token of event `seq` of a thread, for `recipient` only."""
        message = f"{thread_id}|{seq}|{normalize_address(recipient)}".encode()
        mac = hmac.new(self._secret, message, hashlib.sha256).digest()
        return f"{seq}-{base64.b32encode(mac).decode().lower()[:20]}"

    def reply_address(self, token: str) -> str:
        return f"{self.local}+{token}@{self.domain}"

    def parse_token(self, rcpt: str) -> str | None:
        """The token of a reply address of ours (else None: not a reply address)."""
        local, _, domain = normalize_address(rcpt).partition("@")
        base, plus, token = local.partition("+")
        if domain != self.domain or base != self.local or not plus:
            return None
        return token

    def check_token(self, token: str, thread_id: str, sender: str) -> int | None:
        """The event seq a valid token for `sender` names, else None."""
        found = _TOKEN.fullmatch(token)
        if found is None:
            return None
        seq = int(found.group(1))
        return seq if hmac.compare_digest(self.token(thread_id, seq, sender), token) else None

    def may_launch(self, sender: str) -> bool:
        sender = normalize_address(sender)
        for pattern in self.senders:
            if pattern == "*" or pattern == sender:
                return True
            if pattern.startswith("*@") and sender.endswith(pattern[1:]):
                return True
        return False

    # -- outbound -------------------------------------------------------------------------

    async def send(
        self, notice: Notice, to: Destination, previous: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """Mail `notice` in the conversation (or as a reply to the mail it decides)."""
        conv = to.conversation
        recipient = normalize_address(str(conv.get("to") or to.address))
        by_mail = notice.kind == "decided" and notice.via == "email"
        if by_mail and notice.by in (recipient, self.responder(recipient)):
            return {"skipped": "decided by this recipient, by email"}  # they know
        token = self.token(notice.thread_id, notice.seq, recipient)
        mail = EmailMessage()
        mail["From"] = formataddr((notice.agent, self.address))
        mail["To"] = recipient
        mail["Reply-To"] = self.reply_address(token)
        mail["Message-ID"] = make_msgid(domain=self.domain)
        parent = str((previous or {}).get("message_id") or conv.get("message_id") or "")
        references = str(conv.get("references") or "").split()
        if previous and previous.get("message_id"):
            references.append(str(previous["message_id"]))
        subject = str(conv.get("subject") or "")
        if parent:
            mail["In-Reply-To"] = parent
            mail["References"] = " ".join(dict.fromkeys([*references, parent]))
            subject = subject if subject.lower().startswith("re:") else f"Re: {subject}"
        mail["Subject"] = subject.strip() or _subject(notice)
        mail["X-Threadline-Thread"] = notice.thread_id
        mail.set_content(_body(notice, recipient))
        try:
            await aiosmtplib.send(mail, **self.smtp)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise ChannelError(f"email to {recipient} refused: {exc}", retryable=False) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise ChannelError(f"email to {recipient}: {type(exc).__name__}: {exc}") from None
        return {"message_id": mail["Message-ID"], "to": recipient, "link": f"token:{token}"}


def _subject(notice: Notice) -> str:
    match notice.kind:
        case "approval" | "reminder":
            return f"[{notice.agent}] Approval needed: {notice.tool}"
        case "question":
            return f"[{notice.agent}] A question"
        case "escalation":
            return f"[{notice.agent}] Escalated to a human"
        case _:
            return f"[{notice.agent}] {notice.text[:60]}"


def _body(notice: Notice, recipient: str) -> str:
    args = json.dumps(notice.arguments, indent=2, ensure_ascii=False)
    match notice.kind:
        case "approval" | "reminder":
            lead = "Reminder: this is still waiting.\n\n" if notice.kind == "reminder" else ""
            request = f"Request: {notice.text}\n\n" if notice.text else ""
            return (
                f"{lead}{notice.agent} asks to run {notice.tool} with:\n\n{args}\n\n{request}"
                "Reply with APPROVE on the first line to run it, or REJECT and why, or\n"
                "INSTEAD and a message for the agent (the call is not run).\n"
                f"Only a reply from {recipient} counts.\n"
            )
        case "question":
            return f"{notice.text}\n\nReply to this email to answer.\n"
        case "answer":
            return f"{notice.text}\n\n(Reply to continue the conversation.)\n"
        case "escalation":
            return f"Escalated to a human: {notice.text}\n"
        case "decided":
            comment = f"\n\n{notice.comment}" if notice.comment and notice.approved is False else ""
            return f"{notice.text}.{comment}\n"
