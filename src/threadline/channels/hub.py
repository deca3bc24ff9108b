"""`Hub`: what a channel's inbound side acts through (the runtime, the outbox, the runner).

The server builds one `Hub` at start-up and hands it to every channel (`Channel.router`,
`Channel.start`); a standalone receiver (`threadline channels email`) builds its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ..errors import ConfigError
from ..events import utcnow
from ..runtime import Runtime
from ..stores import delivery_log
from ..stores import outbox as outbox_of
from ..stores.base import Store
from ..stores.keys import DeliveryLog, check_retention
from ..stores.outbox import Outbox

__all__ = ["Hub", "refuse_unserved"]


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
        return delivery_log(self.runtime.store, self.retention)

    def kick(self, thread_id: str) -> None:
        self.kick_thread(thread_id)

    async def check_served(self, thread_id: str) -> None:
        await refuse_unserved(self.runtime, thread_id, advances=self.advances)

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
        """Start a thread that answers in `conversation`; link `links` to it; advance it.

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
