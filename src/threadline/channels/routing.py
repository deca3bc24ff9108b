"""The one routing rule: a thread answers where it came from (factor 11).

A thread launched from a channel carries, in its metadata (written at launch, so it is part
of the thread and survives restarts):

    channel        "slack", "email", ... (every thread has it)
    conversation   the channel's reference to the conversation it came from
                   (Slack: {"channel": "C1", "thread_ts": "1700.1"};
                    email: {"to": "amy@x.org", "subject": ..., "message_id": ..., ...})
    reply_to       optional route targets for threads with no conversation of their own
                   (a schedule or a webhook trigger: `"slack:#reports"`, a list of them)

Notices of each kind go to the thread's origin, unless the agent routes the kind elsewhere
(`Agent(routes={"approval": "slack:#oncall"})`; `"origin"` in a list keeps the origin too).
A target on a channel this process does not run is skipped (and logged), never an error
in the run loop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from ..agent import Routes
from ..errors import ConfigError
from ..events import Thread
from .base import Channel, Destination

__all__ = ["ORIGIN", "destinations", "origin", "parse_target"]

log = logging.getLogger("threadline.channels")

ORIGIN = "origin"


def parse_target(target: str) -> tuple[str, str]:
    """`"slack:#oncall"` -> `("slack", "#oncall")`; `"origin"` -> `("origin", "")`.

    Raises:
        ConfigError: not `origin` and not `channel:address`.
    """
    target = target.strip()
    if target == ORIGIN:
        return ORIGIN, ""
    channel, sep, address = target.partition(":")
    if not sep or not channel or not address:
        raise ConfigError(
            f"route target {target!r} must be 'origin' or 'channel:address' "
            "(e.g. 'slack:#oncall', 'email:ops@example.com')"
        )
    return channel, address


def _targets(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def origin(thread: Thread, channels: Mapping[str, Channel]) -> list[Destination]:
    """Where `thread` came from: its conversation, else its `reply_to` targets."""
    name = thread.metadata.get("channel")
    conversation = thread.metadata.get("conversation")
    if isinstance(name, str) and isinstance(conversation, dict) and conversation:
        if name in channels:
            return [Destination(channel=name, conversation=conversation)]
        log.info("thread %s came from channel %s, which is not running here", thread.id, name)
        return []
    raw = thread.metadata.get("reply_to")
    targets = _targets(raw if isinstance(raw, str | list) else None)
    return _resolve(thread, [t for t in targets if t.strip() != ORIGIN], channels)


def destinations(
    thread: Thread, kind: str, routes: Routes, channels: Mapping[str, Channel]
) -> list[Destination]:
    """Where a notice of `kind` about `thread` goes (deduplicated, in route order)."""
    targets = _targets(routes.get(kind)) or [ORIGIN]
    out: list[Destination] = []
    for target in targets:
        if target.strip() == ORIGIN:
            found = origin(thread, channels)
        else:
            found = _resolve(thread, [target], channels)
        out += [d for d in found if d not in out]
    return out


def _resolve(
    thread: Thread, targets: Sequence[str], channels: Mapping[str, Channel]
) -> list[Destination]:
    out = []
    for target in targets:
        try:
            name, address = parse_target(target)
            channel = channels.get(name)
            if channel is None:
                log.info("thread %s: route %s names a channel not running here", thread.id, name)
                continue
            out.append(channel.destination(address))
        except ConfigError as exc:
            log.warning("thread %s: route %r skipped: %s", thread.id, target, exc)
    return out
