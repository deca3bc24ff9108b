"""What the runtime stores and sends for one model call, from one rendering (`Prepared`).

`Renderer.prepare` renders once; the result is either the context to send, with the events
to store before it (a `compacted` summary), or no context and the events that end the
attempt instead (`token_budget_exceeded` and `escalated` when even the minimum context
cannot fit the window; `escalated` when the prompt cannot render). Never an exception:
the runtime records these outcomes, so a thread stays replayable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..errors import PromptError, TokenBudgetError
from ..events import CONTEXT_SOURCE, Compacted, Escalated, Event, TokenBudgetExceeded
from ..models.base import Context
from .base import Rendered

__all__ = ["Prepared", "prepared", "refused"]


@dataclass(slots=True)
class Prepared:
    """What the runtime does before one model call (not frozen: see `budget.Layout`).

    Attributes:
        events: to append before the call (a `compacted` summary; or an escalation, and
            then `context` is None and the model must not be called).
        context: the one rendering to send.
        rendered: how `context` was built (None for a custom renderer).
    """

    events: list[Event]
    context: Context | None
    rendered: Rendered | None = None


def refused(exc: TokenBudgetError | PromptError, seq: int, at: datetime) -> Prepared:
    """What the runtime stores instead of a call the context cannot be made for."""
    if isinstance(exc, PromptError):
        details = {"source": CONTEXT_SOURCE}
        reason = f"prompt error: {exc}"
        return Prepared([Escalated(seq=seq, at=at, reason=reason, details=details)], None)
    return Prepared(
        [
            TokenBudgetExceeded(seq=seq, at=at, needed=exc.needed, available=exc.available),
            Escalated(
                seq=seq + 1,
                at=at,
                reason=f"token budget exceeded: {exc}",
                details={
                    "needed": exc.needed,
                    "available": exc.available,
                    "source": CONTEXT_SOURCE,
                },
            ),
        ],
        None,
    )


def prepared(rendered: Rendered, seq: int, at: datetime) -> Prepared:
    """A rendering, with the `compacted` event to store first when it compacts."""
    events: list[Event] = []
    if rendered.compaction is not None:
        lo, hi, text = rendered.compaction
        events.append(Compacted(seq=seq, at=at, from_seq=lo, to_seq=hi, summary=text))
    return Prepared(events, rendered.context, rendered)
