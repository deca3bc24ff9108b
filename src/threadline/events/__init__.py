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

from . import kinds, state, summary, thread
from .kinds import *  # noqa: F403 - the package re-exports each module's __all__
from .kinds import _EventBase as _EventBase  # for tests that define a kind
from .state import *  # noqa: F403
from .summary import *  # noqa: F403
from .thread import *  # noqa: F403

__all__: list[str] = []
__all__ += kinds.__all__
__all__ += state.__all__
__all__ += summary.__all__
__all__ += thread.__all__
