"""Channels (factor 11): reach people where they are, and answer where a thread came from.

    base.py      the `Channel` interface, `Notice`, `Destination`, `ChannelHub`
    routing.py   the routing rule: origin unless the agent routes a kind elsewhere
    dispatch.py  the `Dispatcher` observer: notices recorded in the outbox, then sent
    hub.py       `Hub`: what inbound channel code acts through
    registry.py  `THREADLINE_CHANNELS=slack,email` -> channels
    memory.py    `MemoryChannel`: sends kept in a list (tests)
    slack.py     Slack (slack_sdk): mentions, DMs, slash commands, Block Kit approvals
    email.py     email (aiosmtplib out, aiosmtpd in), signed reply addresses

See docs/channels.md for setup.
"""

from __future__ import annotations

from .base import Channel, ChannelError, ChannelHub, Destination, Notice, NoticeKind
from .dispatch import Dispatcher, notice_for
from .hub import Hub
from .memory import MemoryChannel
from .registry import CHANNELS, open_channels
from .routing import ORIGIN, destinations, origin, parse_target

__all__ = [
    "CHANNELS",
    "ORIGIN",
    "Channel",
    "ChannelError",
    "ChannelHub",
    "Destination",
    "Dispatcher",
    "Hub",
    "MemoryChannel",
    "Notice",
    "NoticeKind",
    "destinations",
    "notice_for",
    "open_channels",
    "origin",
    "parse_target",
]
