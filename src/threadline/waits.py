"""Durable waits: park a thread until a time or an outside event, holding no process.

A tool parks its thread by returning a `Park`. The runtime records the tool's result and a
`waiting` event in one append; the thread's status becomes `waiting` and the store projects
its `due_at`. No worker holds the thread while it waits. Then either

* an `external_event` with the awaited name arrives (`Runtime.external_event`, the server's
  webhook): the wait ends, the thread is runnable again and the next free worker takes it;
* or `due_at` passes: a worker leases the thread, appends `wait_timed_out`, and advances it.

Two built-in tools cover the common cases; add them to an agent's tools:

    Agent("reminder", tools=[*my_tools, sleep_until, wait_for_event])

The runtime parks a thread the same way when its model provider's circuit breaker is open
(`breaker_wait`): the thread waits, holding no worker, until the breaker's next trial time,
and the wait is not an error (it does not count toward `max_consecutive_errors`). Such
waits are bounded instead: after `Agent.max_breaker_waits` in a row without a model call
the thread escalates, and the model never sees them in its context. A tool call whose
attempt failed waits out a long backoff the same way (`retry_wait`, `threadline.retries`).

Invariants:
    * A wait always has an end: `until`, an `event`, or both (a `Park` with neither is
      refused when it is built).
    * The wait is part of the thread: after a crash or a restart nothing is lost, and any
      worker can finish it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .errors import CircuitOpen
from .events import Waiting, utcnow
from .tools import tool

__all__ = ["WAIT_TOOLS", "Park", "breaker_wait", "retry_wait", "sleep_until", "wait_for_event"]

_MAX_WAIT = timedelta(days=366)
_MIN_BREAKER_WAIT = 1.0
"""Seconds a thread waits at least on an open breaker (its trial may be in flight now)."""


@dataclass(frozen=True, slots=True)
class Park:
    """Returned by a tool: park the thread until `until`, or until the event `event`.

    Attributes:
        until: when the wait times out (UTC; naive datetimes are taken as UTC).
        event: the name of an `external_event` that ends the wait early.
        reason: shown to operators (`threadline threads stuck`) and recorded.
        result: what the model sees as the tool's result (default: a description).
    """

    until: datetime | None = None
    event: str | None = None
    reason: str | None = None
    result: object = None

    def __post_init__(self) -> None:
        if self.until is None and not self.event:
            raise ValueError("a wait needs an end: give `until`, `event` or both")
        if self.until is not None and self.until.tzinfo is None:
            object.__setattr__(self, "until", self.until.replace(tzinfo=UTC))

    def describe(self) -> dict[str, object]:
        """The default tool result: what the wait is for."""
        out: dict[str, object] = {"waiting": True}
        if self.until is not None:
            out["until"] = self.until.isoformat()
        if self.event:
            out["event"] = self.event
        return out


def breaker_wait(error: CircuitOpen, seq: int, at: datetime) -> Waiting:
    """The durable wait for a model call refused by an open circuit breaker.

    The thread waits until the breaker's next trial time (`error.retry_after` seconds after
    `at`, at least one second), then a worker wakes it and the model is asked again. Any
    outside event or message ends the wait early.
    """
    seconds = max(error.retry_after or 0.0, _MIN_BREAKER_WAIT)
    until = at + timedelta(seconds=seconds)
    return Waiting(
        seq=seq,
        at=at,
        until=until,
        reason=(
            f"model provider {error.provider} unavailable (circuit breaker open); "
            f"next trial at {until.isoformat(timespec='seconds')}"
        ),
        breaker=True,
    )


def retry_wait(tool: str, call_id: str, until: datetime, seq: int, at: datetime) -> Waiting:
    """The durable wait for the backoff of a tool call whose attempt failed
    (`threadline.retries`): the thread waits, holding no worker, until `until`; then a
    worker wakes it and the call runs again. Not shown to the model."""
    return Waiting(
        seq=seq,
        at=at,
        until=until,
        reason=f"tool {tool} failed; call {call_id} runs again at "
        f"{until.isoformat(timespec='seconds')}",
        call_id=call_id,
    )


@tool(name="sleep_until")
def sleep_until(until: datetime, reason: str = "") -> Park:
    """Pause this task until a moment in time (ISO 8601, UTC), then continue.

    Args:
        until: when to continue, e.g. 2030-01-31T09:00:00Z.
        reason: why the task waits.
    """
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    latest = utcnow() + _MAX_WAIT
    return Park(until=min(until, latest), reason=reason or None)


@tool(name="wait_for_event")
def wait_for_event(event: str, timeout_seconds: float = 86400.0, reason: str = "") -> Park:
    """Pause this task until an outside event with this name arrives, or the timeout passes.

    Args:
        event: the name of the event to wait for, e.g. "payment_received".
        timeout_seconds: give up waiting after this many seconds.
        reason: why the task waits.
    """
    seconds = min(max(timeout_seconds, 0.0), _MAX_WAIT.total_seconds())
    return Park(until=utcnow() + timedelta(seconds=seconds), event=event, reason=reason or None)


WAIT_TOOLS = (sleep_until, wait_for_event)
"""Both built-in wait tools, to splat into an agent's tools."""
