"""A model call the server refused for its context window, made once more under what the
model learned from the refusal (`models.calibration`, docs/models.md).

The runtime asks `render_again` after every model call: when the error is a
`ContextOverflow` that moved the bound model's window or count correction, the refused
call's budget reservation (if any) is settled as one call that billed nothing, and the
call is made again from the start (rendered under the learned window, compacting as any
render would). Never more than once per call: a call made again that is refused again is
recorded as the `model_error` it is.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

from .errors import ConfigError, ContextOverflow, ModelError
from .rebase import still_decided

if TYPE_CHECKING:
    from .agent import Agent
    from .budgets import Held
    from .events import Thread
    from .execution import Outcome
    from .models.base import Model
    from .stores.base import Lease

__all__ = ["model_of", "render_again"]

_AGAIN: ContextVar[bool] = ContextVar("threadline_render_again", default=False)
"""Set while a model call is made once more: it is not made a third time."""


class _Caller(Protocol):
    """The runtime, as far as a call made again needs it."""

    async def _append_rebased(
        self, t: Thread, b: Outcome, lease: Lease | None, *, still_valid: Callable[[Thread], bool]
    ) -> Thread: ...

    async def _call_model(
        self, agent: Agent, thread: Thread, lease: Lease | None, budget: int | None
    ) -> tuple[Thread, int]: ...


def model_of(agent: Agent, default: Model | None) -> Model:
    """The model that answers `agent`: its own, else the runtime's `default`.

    Raises:
        ConfigError: neither is set.
    """
    model = agent.model or default
    if model is None:
        raise ConfigError(f"agent {agent.name!r} has no model; set THREADLINE_MODEL or pass model=")
    return model


async def render_again(
    runtime: _Caller,
    agent: Agent,
    thread: Thread,
    held: Held,
    error: ModelError | None,
    lease: Lease | None,
    budget: int | None,
) -> tuple[Thread, int] | None:
    """The call made once more when `error` is a window refusal that taught the model
    something (`ContextOverflow.learned`); None: not such a refusal, or this call already
    was the one made again."""
    if not isinstance(error, ContextOverflow) or not error.learned or _AGAIN.get():
        return None
    if held.reserved is not None:
        settle = held.settle(lambda seq, at: [], None, error)
        valid = still_decided(thread.next_seq)
        thread = await runtime._append_rebased(thread, settle, lease, still_valid=valid)
    mark = _AGAIN.set(True)
    try:
        return await runtime._call_model(agent, thread, lease, budget)
    finally:
        _AGAIN.reset(mark)
