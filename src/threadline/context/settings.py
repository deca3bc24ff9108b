"""`ContextSettings`: how one agent's context is built, as typed configuration.

An agent owns one (`Agent(context=ContextSettings(...))`); the `Renderer` and the runtime's
storage redaction read it. Every field is optional: the defaults give the compact format
with native tool definitions, a budget sized for the model that answers, the built-in
secret patterns and the deterministic `digest` summariser.

Sizing for a model (`budget_for`, `counter_for`) follows one order: what the settings say
wins; then what the model declares in its `ModelProfile` (window, output cap, tokenizer,
itself filled from what its id tells where the backend knows no better); then the
defaults (`DEFAULT_WINDOW`, `ApproxCounter`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError
from ..events import Event
from .budget import DEFAULT_WINDOW, ContextBudget
from .prefetch import PrefetchStep
from .redaction import Redactor, redactor_from
from .tokens import ApproxCounter, TokenCounter, counter_for_model, counter_from

if TYPE_CHECKING:
    from ..models.base import Model

__all__ = ["ContextSettings", "RedactSpec", "RetrievalPolicy", "Summariser", "Tokenizer"]

Summariser = Callable[[Sequence[Event], str | None], "str | Awaitable[str]"]
"""`(events of the span, the previous summary or None) -> summary text` (sync or async)."""

Tokenizer = TokenCounter | Callable[[str], int] | str
"""A `TokenCounter`, a function `text -> int`, an encoding name (`"o200k_base"`) or
`"approx"`."""

RedactSpec = bool | Redactor | Sequence[str | re.Pattern[str]] | Mapping[str, Any]
"""True (the built-in patterns), False (off), extra patterns, `{patterns, values,
defaults}` or a ready `Redactor`."""

_BUDGET_INTS = ("max_output_tokens", "keep_recent", "max_result_tokens", "summary_tokens", "margin")
_BUDGET_FLOATS = ("retrieved_share", "compact_to")


@dataclass(frozen=True)
class RetrievalPolicy:
    """How an agent retrieves: which tool searches, who writes the query, how the split moves.

    Attributes:
        tool: the search tool (`threadline.retrieval.tool.knowledge_tool`); its calls and
            results since the latest user message are budgeted as retrieved material.
        query: `latest_user_message`: every user message is searched before the next model
            call (a pre-fetched call, an input for replay); `model`: only the model searches,
            by choosing the tool with a query it writes.
        split: `static` keeps `ContextSettings.retrieved_share`; `dynamic` moves it per call
            (`budget.dynamic_share`): towards history as the conversation grows, towards
            retrieval when the best hit's relevance is high.
    """

    tool: str = "search_knowledge"
    query: Literal["latest_user_message", "model"] = "latest_user_message"
    split: Literal["static", "dynamic"] = "static"

    def __post_init__(self) -> None:
        if self.query not in ("latest_user_message", "model"):
            raise ConfigError(
                f"retrieval query policy must be latest_user_message or model, not {self.query!r}"
            )
        if self.split not in ("static", "dynamic"):
            raise ConfigError(f"retrieval split must be static or dynamic, not {self.split!r}")

    def prefetch_steps(self) -> list[PrefetchStep]:
        """The pre-fetch step that searches a user message (none for the `model` policy)."""
        if self.query != "latest_user_message":
            return []
        return [(self.tool, _query_of)]


def _query_of(text: str, _metadata: dict[str, Any]) -> Mapping[str, Any]:
    return {"query": text}


@dataclass(frozen=True, eq=False)
class ContextSettings:
    """How an agent's context is rendered, budgeted, summarised and redacted.

    Attributes:
        format: `compact` (one user message of tagged blocks) or `messages` (the chat array).
        native_tools: in the compact format, send tool definitions natively (True) or as
            signatures in the system text (False: the smallest context); None (the
            default): as the answering model declares (`ModelProfile.tools_in_prompt`:
            hosted APIs that bill every prompt token get signatures, local and test
            models native definitions).
        tokenizer: how tokens are counted; None: the model's own, else by its id.
        model_id: the model to size for when none is bound (e.g. `threadline render`).
        context_window / max_output_tokens / keep_recent / max_result_tokens /
            summary_tokens / retrieved_share / compact_to / margin: budget overrides (see
            `ContextBudget`); None: sized for the model.
        budget: a whole `ContextBudget`, used as is (the overrides are then ignored).
        redact: which secrets rendering and storage mask (see `RedactSpec`).
        store_secrets: True stores outside input unmasked (rendering still masks).
        summariser: replaces the deterministic `digest` when history is compacted.
        prefetch: deterministic tool calls made at launch (see `context.prefetch`).
        prompt_vars: template variables for the agent's prompt (the thread's
            `metadata["prompt_vars"]` override them).
        retrieval: the agent's retriever and query policy (see `RetrievalPolicy`).

    Raises:
        ConfigError: (at construction) an unknown format, a bad tokenizer or redaction
            spec, or budget values `ContextBudget` rejects.
    """

    format: Literal["compact", "messages"] = "compact"
    native_tools: bool | None = None
    tokenizer: Tokenizer | None = None
    model_id: str | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    keep_recent: int | None = None
    max_result_tokens: int | None = None
    summary_tokens: int | None = None
    retrieved_share: float | None = None
    compact_to: float | None = None
    margin: int | None = None
    budget: ContextBudget | None = None
    redact: RedactSpec = True
    store_secrets: bool = False
    summariser: Summariser | None = None
    prefetch: Sequence[PrefetchStep] = ()
    prompt_vars: Mapping[str, Any] = field(default_factory=dict)
    retrieval: RetrievalPolicy | None = None

    def __post_init__(self) -> None:
        if self.format not in ("compact", "messages"):
            raise ConfigError(
                f"unknown context format {self.format!r}; use 'compact' or 'messages'"
            )
        if self.tokenizer is not None and not isinstance(self.tokenizer, str):
            counter_from(self.tokenizer)  # raises for a wrong type; names load lazily
        _ = self.redactor  # a bad spec or pattern fails here, not at the first append
        self.budget_for(None)  # a bad override fails here too

    @cached_property
    def redactor(self) -> Redactor | None:
        """The redactor rendering uses (None when redaction is off)."""
        return redactor_from(self.redact)

    @property
    def storage_redactor(self) -> Redactor | None:
        """The redactor appends use: None when secrets are stored or redaction is off."""
        return None if self.store_secrets else self.redactor

    def overrides(self) -> dict[str, Any]:
        """The budget fields these settings set explicitly."""
        out: dict[str, Any] = {}
        for name in (*_BUDGET_INTS, *_BUDGET_FLOATS):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def native_tools_for(self, model: Model | None) -> bool:
        """Whether tool definitions travel natively for `model` (None: no model bound)."""
        if self.native_tools is not None:
            return self.native_tools
        return model is None or not model.profile.tools_in_prompt

    def counter_for(self, model: Model | None) -> TokenCounter:
        """The token counter for `model` (None: no model bound)."""
        if self.tokenizer is not None:
            return counter_from(self.tokenizer)
        if model is not None:
            return counter_for_model(model)
        if self.model_id:
            return counter_for_model(self.model_id)
        return ApproxCounter()

    def budget_for(self, model: Model | None, *, window: int | None = None) -> ContextBudget:
        """The budget for `model` (None: no model bound); `window`: at most that window
        (a window the server said it has: `models.calibration`), over any other."""
        if self.budget is not None:
            if window is not None and window < self.budget.window:
                return replace(
                    self.budget,
                    window=window,
                    max_output_tokens=min(self.budget.max_output_tokens, max(1, window // 4)),
                )
            return self.budget
        profile = model.profile if model is not None else None
        declared = self.context_window or (profile.context_window if profile else None)
        if window is not None and declared:
            window = min(window, declared)
        window = window or declared
        if not window:
            # Imported here: the agent's settings are imported by `decide`, whose import
            # closure stays free of the model package (tests/test_reducer.py).
            from ..models.base import known_window

            window = known_window(self.model_id or "") or DEFAULT_WINDOW
        budget = ContextBudget.sized(int(window), self.overrides())
        cap = profile.max_output_tokens if profile else None
        if cap and self.max_output_tokens is None:
            budget = replace(budget, max_output_tokens=min(budget.max_output_tokens, cap))
        return budget
