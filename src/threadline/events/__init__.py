"""Events, the thread they form, and the state derived from it (factor 5).

A thread is an append-only sequence of events; it is the only state an agent run has.
Everything else - status, pending tool call, step count, consecutive errors - is *derived*
by folding the events in order. The fold is incremental: `ThreadState.apply` costs O(1) per
event, so deciding the next step never re-reads the thread from event 0.

Invariants:
    * `seq` is 0-based and dense: event i of a thread has `seq == i`.
    * Events are frozen; a thread only grows at its end.
    * `Thread.state` always equals folding `Thread.events` from an empty state.
"""

from __future__ import annotations

from .kinds import (
    CONTEXT_SOURCE,
    EVENT_CLASSES,
    PREFETCH_PREFIX,
    SCHEMA_VERSION,
    Approval,
    ApprovalRequested,
    Compacted,
    Done,
    Escalated,
    Event,
    EventTraits,
    ExternalEvent,
    Failed,
    ForkedFrom,
    HumanRequest,
    HumanResponse,
    InvalidOutput,
    ModelCall,
    ModelError,
    Origin,
    Paused,
    RawToolCall,
    ReplayRole,
    Resumed,
    TokenBudgetExceeded,
    ToolCall,
    ToolError,
    ToolResult,
    ToolStarted,
    UserMessage,
    Waiting,
    WaitTimedOut,
    event_from_dict,
    event_from_json,
    is_prefetch,
    utcnow,
)
from .kinds import (
    _EventBase as _EventBase,  # for tests that define a kind
)
from .state import PendingCall, Status, ThreadState
from .thread import Thread

__all__ = [
    "CONTEXT_SOURCE",
    "EVENT_CLASSES",
    "PREFETCH_PREFIX",
    "SCHEMA_VERSION",
    "Approval",
    "ApprovalRequested",
    "Compacted",
    "Done",
    "Escalated",
    "Event",
    "EventTraits",
    "ExternalEvent",
    "Failed",
    "ForkedFrom",
    "HumanRequest",
    "HumanResponse",
    "InvalidOutput",
    "ModelCall",
    "ModelError",
    "Origin",
    "Paused",
    "PendingCall",
    "RawToolCall",
    "ReplayRole",
    "Resumed",
    "Status",
    "Thread",
    "ThreadState",
    "TokenBudgetExceeded",
    "ToolCall",
    "ToolError",
    "ToolResult",
    "ToolStarted",
    "UserMessage",
    "WaitTimedOut",
    "Waiting",
    "event_from_dict",
    "event_from_json",
    "is_prefetch",
    "utcnow",
]
