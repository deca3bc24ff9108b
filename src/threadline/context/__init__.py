"""Owning the context window (factor 3): the renderer, formats, token counting, budgets,
compaction, redaction and pre-fetch. See docs/context.md.

Nothing in this package knows an `Agent` or a store: an agent's `ContextSettings` and its
loaded prompt are handed to a `Renderer` when the agent joins a runtime.
"""

from .base import ContextFormat, Rendered
from .budget import ContextBudget
from .compact import compact_block, render_event
from .compaction import LLMSummariser, digest
from .prepared import Prepared
from .redaction import Redactor, redact_for_storage
from .renderer import Renderer
from .settings import ContextSettings, RetrievalPolicy
from .tokens import ApproxCounter, BPECounter, CallableCounter, TokenCounter, counter_for_model

__all__ = [
    "ApproxCounter",
    "BPECounter",
    "CallableCounter",
    "ContextBudget",
    "ContextFormat",
    "ContextSettings",
    "LLMSummariser",
    "Prepared",
    "Redactor",
    "Rendered",
    "Renderer",
    "RetrievalPolicy",
    "TokenCounter",
    "compact_block",
    "counter_for_model",
    "digest",
    "redact_for_storage",
    "render_event",
]
