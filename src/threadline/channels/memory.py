"""`MemoryChannel`: a channel that keeps what it sends in a list (tests, like MemoryStore).

It is a complete channel for the dispatcher: it sends (records) notices, maps identities
to responders from a dict, and can be told to fail the next sends, so users test their
agents' routing, reminders and expiries the way Threadline's own tests do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .base import ChannelError, ChannelHub, Destination, Notice

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = ["MemoryChannel", "Sent"]


@dataclass(frozen=True, slots=True)
class Sent:
    """One notice as the channel received it to send."""

    notice: Notice
    to: Destination
    previous: Mapping[str, Any] | None


@dataclass
class MemoryChannel:
    """A channel whose sends land in `sent`.

    Args:
        name: the channel's name (route targets say `<name>:<address>`).
        responders: identity -> responder name.
        fail: how many of the next sends raise a retryable `ChannelError`.
    """

    name: str = "memory"
    responders: dict[str, str] = field(default_factory=dict)
    fail: int = 0
    sent: list[Sent] = field(default_factory=list)
    started: bool = False

    def router(self, hub: ChannelHub) -> APIRouter | None:
        return None

    async def send(
        self, notice: Notice, to: Destination, previous: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        if self.fail > 0:
            self.fail -= 1
            raise ChannelError(f"{self.name}: send failed (as asked)")
        self.sent.append(Sent(notice, to, previous))
        ref: dict[str, Any] = {"n": len(self.sent)}
        if to.address:
            ref["link"] = f"{to.address}:{len(self.sent)}"
        return ref

    def responder(self, identity: str) -> str | None:
        return self.responders.get(identity)

    def destination(self, address: str) -> Destination:
        return Destination(channel=self.name, address=address, conversation={"to": address})

    async def start(self, hub: ChannelHub) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    def kinds(self) -> list[str]:
        """The kinds sent so far, in order."""
        return [s.notice.kind for s in self.sent]
