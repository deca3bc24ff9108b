"""Owning the context window (factor 3): renderers, token counting, budgets, compaction,
redaction and pre-fetch. See docs/context.md."""

from .budget import ContextBudget
from .compaction import LLMSummariser, digest, prepare_call
from .redaction import Redactor, redact_for_storage
from .render import Rendered, render, render_context, render_event
from .tokens import ApproxCounter, BPECounter, CallableCounter, TokenCounter, counter_for

__all__ = [
    "ApproxCounter",
    "BPECounter",
    "CallableCounter",
    "ContextBudget",
    "LLMSummariser",
    "Redactor",
    "Rendered",
    "TokenCounter",
    "counter_for",
    "digest",
    "prepare_call",
    "redact_for_storage",
    "render",
    "render_context",
    "render_event",
]
