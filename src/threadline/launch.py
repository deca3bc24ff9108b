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

__all__ = ["LaunchOptions", "launched", "user_message"]


class LaunchOptions(TypedDict, total=False):
    """What a new thread starts with besides its agent and message: `Runtime.launch`'s
    keywords (defaults and meaning there) as the HTTP `Client` and the CLI's
    `LocalThreads` pass them on."""

    metadata: dict[str, Any] | None
    budget: Budget | None
    tree_budget: Budget | None


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
