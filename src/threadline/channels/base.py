"""The channel interface: what every way of reaching people (Slack, email, ...) provides.

A channel does two things, both thin adapters over the runtime:

* **Inbound**: its routes (mounted under `/v1/channels/<name>`, verified by the channel's
  own signature scheme, not API keys) or its own listener turn what people send into
  runtime actions through the `ChannelHub`: launch a thread, approve or reject a call,
  answer a question, add a message.
* **Outbound**: `send(notice, destination)` tells people about a thread: an approval to
  give, a question, the final answer, an escalation, a reminder, or that something was
  decided. The dispatcher (`dispatch.py`) decides *what* to send *where* (a thread answers
  where it came from, see `routing.py`) and records each send in the store's outbox first,
  so a crash loses no notice.

Invariants:
    * A channel never writes events itself: every change to a thread goes through the
      runtime's checked actions (`Runtime.approve`, `respond`, `message`, `launch`), so a
      forged, stale or replayed request changes nothing.
    * `responder(identity)` is the only way a channel identity (a Slack user id, an email
      address) becomes a responder name; None means the identity may not answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ChannelError
from .hub import Hub

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = [
    "Channel",
    "ChannelError",
    "ChannelHub",
    "Destination",
    "Notice",
    "NoticeKind",
]

NoticeKind = Literal["approval", "question", "answer", "escalation", "reminder", "decided"]
"""What a notice tells: an approval to give, a question to answer, the final answer, an
escalation, a reminder of a pending approval, or that an approval or question was decided
(sent where the approval or question went, to update it)."""


class Notice(BaseModel):
    """One thing to tell people about a thread; the same for every channel.

    Attributes:
        id: stable for the event it comes from (`<thread>:<seq>:<kind>`).
        text: the question, the final answer, the escalation reason, or a one-line
            summary of a decision ("approved by alice in Slack").
        call_id / tool / arguments: the call an approval (or its decision) is about.
        request_id: the question a question notice (or its decision) is about.
        question: the question a `decided` notice reports the answer to.
        responders: who may answer (responder names); empty means anyone the channel
            maps to a responder.
        approved / by / via / comment: the decision, for `decided` notices.
        topic: what the notice is about within its thread (`approval:<call_id>`, ...).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    kind: NoticeKind
    thread_id: str
    agent: str
    seq: int
    topic: str
    text: str = ""
    call_id: str | None = None
    tool: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    request_id: str | None = None
    responders: tuple[str, ...] = ()
    question: str = ""
    approved: bool | None = None
    by: str | None = None
    via: str | None = None
    comment: str | None = None


class Destination(BaseModel):
    """Where a notice goes: a channel and a conversation on it.

    `conversation` is the channel's own reference (Slack: `channel` and `thread_ts`; email:
    `to`, `subject`, `message_id`, `references`). An empty conversation on a named target
    (`address`) starts a new conversation there (`slack:#oncall`, `email:ops@example.com`).
    """

    model_config = ConfigDict(frozen=True)

    channel: str
    address: str = ""
    conversation: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        """A short stable key (outbox entry ids are a notice id plus this)."""
        parts = [self.channel, self.address]
        parts += [f"{k}={self.conversation[k]}" for k in sorted(self.conversation)]
        return "|".join(parts)


ChannelHub: TypeAlias = Hub
"""What a channel's inbound side acts through: the one `Hub` of its process (the runtime,
the outbox, the delivery log, and the checked way to act on a thread)."""


@runtime_checkable
class Channel(Protocol):
    """A way to reach people. See the module docstring for the contract."""

    name: str

    def router(self, hub: ChannelHub) -> APIRouter | None:
        """Inbound HTTP routes, mounted under `/v1/channels/<name>` (None: none)."""

    async def send(
        self, notice: Notice, to: Destination, previous: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """Send `notice`; return the reference of what was sent (kept in the outbox).

        `previous` is the reference of the message this notice updates (the approval
        request a `decided` notice reports on), when one was sent to `to`.

        Raises:
            ChannelError: sending failed (`retryable` says whether to try again).
        """

    def responder(self, identity: str) -> str | None:
        """The responder name of a channel identity, or None if it may not answer."""

    def destination(self, address: str) -> Destination:
        """A destination for a route target on this channel (`#oncall`, `ops@x.org`).

        Raises:
            ConfigError: the address is not one this channel can send to.
        """

    async def start(self, hub: ChannelHub) -> None:
        """Start any listener of its own (the email receiver); called at server start."""

    async def stop(self) -> None:
        """Stop listeners and close clients; called at server shutdown."""
