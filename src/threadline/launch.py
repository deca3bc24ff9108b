"""A new thread's first events: the user's message, the agent's pre-fetch (factor 13), all
passed through storage redaction. Pure CPU work: `Runtime.launch` runs it where it runs
its other heavy pure work (`Runtime.offload`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict

from .agent import Agent
from .context.prefetch import prefetch_events
from .context.redaction import redact_for_storage
from .events import Budget, Thread, UserMessage

__all__ = [
    "LINK_KEYS",
    "REF_KEY",
    "LaunchOptions",
    "launched",
    "thread_metadata",
    "unlinked",
    "user_message",
]

REF_KEY = "agent_ref"
"""The metadata key of the reference the agent's code was loaded from (`path.py:name`),
recorded by the runtime: the CLI imports the file it names, so it is never a caller's."""
LINK_KEYS = frozenset({"parent_thread", "parent_call", "ancestors"})
"""The metadata keys linking a sub-agent's thread to its parent and tree (composition.py):
set by the runtime when it starts a child; a launch from outside may not set them (the
HTTP API refuses them, `threadline.wire.LaunchBody`)."""


class LaunchOptions(TypedDict, total=False):
    """What a new thread starts with besides its agent and message: `Runtime.launch`'s
    keywords (defaults and meaning there) as the HTTP `Client` and the CLI's
    `LocalThreads` pass them on."""

    metadata: dict[str, Any] | None
    budget: Budget | None
    tree_budget: Budget | None


def thread_metadata(
    channel: str, metadata: dict[str, Any] | None, ref: str | None
) -> dict[str, Any]:
    """A new thread's metadata: its `channel`, the caller's `metadata` (which may name
    another channel) and, when the runtime loaded the agent from a reference, that `ref`.
    A caller's own `agent_ref` is dropped, whether or not there is one to record."""
    meta = {"channel": channel, **(metadata or {})}
    meta.pop(REF_KEY, None)
    return meta if ref is None else {**meta, REF_KEY: ref}


def unlinked(metadata: dict[str, Any]) -> dict[str, Any]:
    """`metadata` from outside (a client's launch) unless it sets a key linking a sub-agent's
    thread to its parent (`LINK_KEYS`: its end would be delivered there, and its spending
    charged to that tree's budget): then ValueError naming them, nothing launched."""
    if taken := sorted(LINK_KEYS.intersection(metadata)):
        raise ValueError(
            f"metadata keys {', '.join(map(repr, taken))} link a sub-agent's thread to its "
            "parent; only the runtime sets them, when an agent calls a sub-agent"
        )
    return metadata


def launched(agent: Agent, thread: Thread, first: UserMessage, at: datetime) -> Thread:
    """A new thread: its first message, the agent's pre-fetch (factor 13: deterministic
    tool calls run before any model call), all passed through storage redaction."""
    thread.append(first)
    retrieval = agent.context.retrieval
    thread.extend(
        prefetch_events(
            [*agent.context.prefetch, *(retrieval.prefetch_steps() if retrieval else ())],
            agent.registry,
            first.text,
            thread.metadata,
            seq=thread.next_seq,
            at=at,
            owner=f"agent {agent.name}",
        )
    )
    return _redacted_copy(agent, thread)


def _redacted_copy(agent: Agent, thread: Thread) -> Thread:
    """`thread` with its launch events passed through storage redaction."""
    events = redact_for_storage(agent.context.storage_redactor, thread.events)
    if all(a is b for a, b in zip(events, thread.events, strict=True)):
        return thread
    return Thread(
        thread.id, thread.agent, events, metadata=thread.metadata, created_at=thread.created_at
    )


def user_message(
    seq: int,
    at: datetime,
    text: str,
    channel: str,
    sender: str | None,
    metadata: dict[str, Any] | None,
) -> UserMessage:
    """A person's message as its event: a thread's first (`Runtime.launch`) or a later one
    (`Runtime.message`). The event holds its own copy of `metadata`."""
    return UserMessage(
        seq=seq, at=at, text=text, channel=channel, sender=sender, metadata=dict(metadata or {})
    )
