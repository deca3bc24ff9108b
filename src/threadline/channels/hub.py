"""`Hub`: what a channel's inbound side acts through (the runtime, the outbox, the runner).

The server builds one `Hub` at start-up and hands it to every channel (`Channel.router`,
`Channel.start`); a standalone receiver (`threadline channels email`) builds its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from ..errors import ConfigError
from ..events import utcnow
from ..runtime import Runtime
from ..stores import delivery_log
from ..stores import outbox as outbox_of
from ..stores.base import Store
from ..stores.keys import DeliveryLog, check_retention
from ..stores.outbox import Outbox

__all__ = ["Hub", "refuse_unserved"]

T = TypeVar("T")


def _no_kick(_thread_id: str) -> None:
    return None


async def refuse_unserved(runtime: Runtime, thread_id: str, *, advances: bool) -> None:
    """Refuse an action that would leave the thread with nothing to advance it.

    A process that advances its threads can only act on a thread of an agent it serves:
    approving, answering or resuming another would write the action, then the thread
    would sit `running` forever. Raises ConfigError before anything is written;
    ThreadNotFound for an unknown id. With `advances` False (API-only servers, receivers)
    the workers leasing from the store advance every agent, so nothing is refused.
    """
    if not advances:
        return
    agent = (await runtime.store.get(thread_id)).agent
    if agent not in runtime.agents:
        raise ConfigError(
            f"thread {thread_id} runs agent {agent!r}, which this server does not "
            "serve; act on it through a server or worker that serves it"
        )


@dataclass
class Hub:
    """The `ChannelHub` of a process: its runtime and how it advances threads.

    Args:
        runtime: the runtime whose checked actions channels call.
        kick_thread: advance a thread in the background (the server's runner); the default
            does nothing (API-only servers: workers leasing from the store advance threads).
        advances: this process advances threads (`kick_thread` does something), so it
            refuses actions on threads of agents it does not serve (`check_served`).
        retention: how long replayed requests and mails are recognised
            (`THREADLINE_DELIVERY_RETENTION`; default a day).
    """

    runtime: Runtime
    kick_thread: Callable[[str], None] = field(default=_no_kick)
    advances: bool = False
    retention: timedelta | None = None
    """How long inbound request ids are remembered (default a day)."""

    def __post_init__(self) -> None:
        if self.retention is not None:
            check_retention(self.retention)  # at start, not at the first request

    @property
    def store(self) -> Store:
        return self.runtime.store

    @property
    def outbox(self) -> Outbox:
        return outbox_of(self.runtime.store)

    @property
    def deliveries(self) -> DeliveryLog:
        """Remembers request ids and signatures, so a replayed request is refused."""
        return delivery_log(self.runtime.store, self.retention)

    def kick(self, thread_id: str) -> None:
        """Advance the thread in the background after an action (the server's runner)."""
        self.kick_thread(thread_id)

    async def check_served(self, thread_id: str) -> None:
        """Raise ConfigError (before anything is written) when acting on the thread here
        would leave it with nothing to advance it (its agent is not served here)."""
        await refuse_unserved(self.runtime, thread_id, advances=self.advances)

    async def act(self, thread_id: str, action: Callable[[], Awaitable[T]]) -> T:
        """Run a person's `action` on the thread (a runtime action: approve, respond,
        message, ...) the one way every channel and route does: refused before anything is
        written when the thread's agent is not served here (`check_served`), then the
        thread is advanced in the background. What `action` raises propagates, unkicked."""
        await self.check_served(thread_id)
        result = await action()
        self.kick(thread_id)
        return result

    async def launch(
        self,
        agent: str,
        text: str,
        *,
        channel: str,
        sender: str | None,
        conversation: Mapping[str, Any],
        links: tuple[str, ...] = (),
    ) -> str:
        """Start a thread that answers in `conversation` on `channel`; returns its id.

        `links` are conversation keys tied to the thread (a reply there reaches it); the
        thread is advanced in the background.

        Raises:
            ConfigError: this runtime does not serve `agent`.
        """
        thread = await self.runtime.launch(
            agent,
            text,
            channel=channel,
            sender=sender,
            metadata={"conversation": dict(conversation)},
            advance=False,
        )
        for key in links:
            await self.outbox.link(channel, key, thread.id, at=utcnow())
        self.kick(thread.id)
        return thread.id
