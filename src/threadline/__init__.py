"""Threadline: a small, honest runtime for production LLM agents (12-Factor Agents).

The public API is exactly `__all__`; everything else is internal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from .agent import Agent, ApprovalExpiry, intent_schema
from .context import (
    ContextBudget,
    ContextSettings,
    LLMSummariser,
    Redactor,
    Renderer,
    RetrievalPolicy,
)
from .errors import (
    AppendConflict,
    ConfigError,
    CorruptEvent,
    InvalidAction,
    LeaseLost,
    LockMismatch,
    MalformedVerdict,
    ModelError,
    NotAllowed,
    PromptError,
    ReplayDivergence,
    RetryableToolError,
    StaleWriteAhead,
    ThreadlineError,
    ThreadNotFound,
    TokenBudgetError,
)
from .events import Budget, Event, Status, Thread, ThreadState
from .guards import Guard, GuardCall, GuardDecision
from .heap import settle_heap
from .judge import Judge
from .loader import load_agent
from .models.base import Context, Message, Model, ModelOutput, ToolSpec
from .models.registry import resolve_model
from .prompts import Prompt
from .ratelimits import Rate, RateLimits
from .reducer import (
    AwaitApproval,
    AwaitHuman,
    CallModel,
    Escalate,
    Finish,
    RunTool,
    RunTools,
    Step,
    Wait,
    decide,
    interpret,
)
from .replay import replay_thread
from .resilience import ToolBreaker, ToolRetry
from .runtime import Runtime
from .runtime_actions import Verdict
from .settings import Settings
from .stores import MemoryStore, SQLiteStore, Store, open_store
from .tools import Tool, ToolContext, ToolRegistry, done_for_now, request_more_information, tool
from .waits import Park, sleep_until, wait_for_event
from .worker import Worker, advance_exclusively

__all__ = [
    "Agent",
    "AppendConflict",
    "ApprovalExpiry",
    "AwaitApproval",
    "AwaitHuman",
    "Budget",
    "CallModel",
    "ConfigError",
    "Context",
    "ContextBudget",
    "ContextSettings",
    "CorruptEvent",
    "Escalate",
    "Event",
    "Finish",
    "Guard",
    "GuardCall",
    "GuardDecision",
    "InvalidAction",
    "Judge",
    "LLMSummariser",
    "LeaseLost",
    "LockMismatch",
    "MalformedVerdict",
    "MemoryStore",
    "Message",
    "Model",
    "ModelError",
    "ModelOutput",
    "NotAllowed",
    "Park",
    "Prompt",
    "PromptError",
    "Rate",
    "RateLimits",
    "Redactor",
    "Renderer",
    "ReplayDivergence",
    "RetrievalPolicy",
    "RetryableToolError",
    "RunTool",
    "RunTools",
    "Runtime",
    "SQLiteStore",
    "Settings",
    "StaleWriteAhead",
    "Status",
    "Step",
    "Store",
    "Thread",
    "ThreadNotFound",
    "ThreadState",
    "ThreadlineError",
    "TokenBudgetError",
    "Tool",
    "ToolBreaker",
    "ToolContext",
    "ToolRegistry",
    "ToolRetry",
    "ToolSpec",
    "Verdict",
    "Wait",
    "Worker",
    "advance_exclusively",
    "decide",
    "done_for_now",
    "intent_schema",
    "interpret",
    "load_agent",
    "open_store",
    "replay_thread",
    "request_more_information",
    "resolve_model",
    "run_sync",
    "settle_heap",
    "sleep_until",
    "tool",
    "wait_for_event",
]

__version__ = "0.1.0"

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous code (the thin sync wrapper over the async core)."""
    return asyncio.run(coro)
