"""`Hub`: what a channel's inbound side acts through (the runtime, the outbox, the runner).

The server builds one `Hub` at start-up and hands it to every channel (`Channel.router`,
`Channel.start`); a standalone receiver (`threadline channels email`) builds its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..events import utcnow
from ..runtime import Runtime
from ..stores import delivery_log
from ..stores import outbox as outbox_of
from ..stores.base import Store
from ..stores.keys import DeliveryLog
from ..stores.outbox import Outbox

__all__ = ["Hub"]


def _no_kick(_thread_id: str) -> None:
    return None


@dataclass
class Hub:
    """The `ChannelHub` of a process: its runtime and how it advances threads.

    Args:
        runtime: the runtime whose checked actions channels call.
        kick: advance a thread in the background (the server's runner); the default does
            nothing (API-only servers: workers leasing from the store advance threads).
    """

    runtime: Runtime
    kick_thread: Callable[[str], None] = field(default=_no_kick)

    @property
    def store(self) -> Store:
        return self.runtime.store

    @property
    def outbox(self) -> Outbox:
        return outbox_of(self.runtime.store)

    @property
    def deliveries(self) -> DeliveryLog:
        return delivery_log(self.runtime.store)

    def kick(self, thread_id: str) -> None:
        self.kick_thread(thread_id)

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
