"""Tool retries with backoff, and a circuit breaker per tool (issue 13).

A tool call's run can fail in a way worth trying again: the tool raised
`RetryableToolError`, or it timed out (or raised `ToolOutcomeUnknown`) and running it
again is safe because it has no side effects or is idempotent. Such a failure is not shown
to the model at once:

1. the attempt is recorded as `tool_attempt_failed` (its number, the error, and
   `retry_at`: the end of its backoff, `resilience.backoff` with equal jitter). The call
   stays pending, so `decide` runs it again as attempt n+1, with the same idempotency key;
   after a crash the log says which attempt comes next;
2. a backoff up to `ToolRetry.sleep_limit` seconds is slept just before the next attempt
   (before its `tool_started`, so a crash while sleeping is not a "maybe ran"); a longer
   one is a durable wait (`waits.retry_wait`): the thread parks holding no worker, and a
   worker wakes it when the backoff ends;
3. when the attempts are used up (`ToolRetry.max_attempts`), the last failure is the
   call's `tool_error`, saying how many attempts were made. The model sees that.

A timeout of a tool with side effects that is not idempotent is never tried again (it may
have taken effect): its `tool_error` goes to the model as before.

Each tool also has a circuit breaker (`ToolBreaker`; `Tool(breaker=None)` turns it off),
the same `resilience.CircuitBreaker` the model providers use: after `failure_threshold`
failed attempts in a row (the retryable failures above, and outcomes unknown), the tool is
open for `reset_after` seconds. A call in that time is not run: it gets at once a
`tool_error` (`CircuitOpen`) telling the model the tool is unavailable and when it may try
again, so it can choose another way. Then one trial call runs (half-open); its success
closes the breaker, its failure opens it again.

The breaker admits calls, not attempts: a call it let through keeps its retries (up to
`max_attempts`, each after its backoff) even when the breaker opens meanwhile, possibly on
that call's own failures, so `ToolRetry` means what it says whatever the threshold. Each
attempt still tells the breaker how it went (an answer closes it). A call's retries are
already bounded and spread out; what the breaker stops is new calls piling up.

Breaker state is kept in memory by the runtime (`Runtime.tool_runs`), so it is per process:
each worker learns on its own that a tool is down, after `failure_threshold` failures of
its own. Retries, backoffs and attempts are in the thread and survive everything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from .events import Event, PendingCall, ToolAttemptFailed
from .execution import NOT_VALID, TIMED_OUT, Failure, Outcome, ToolOutcome, execute
from .reducer import RunTool
from .resilience import CircuitBreaker, backoff
from .tools import Tool
from .waits import retry_wait

__all__ = ["ToolRuns"]

Stored = Callable[[Any], Awaitable[Any]]
"""Turns a tool's result into what is stored (see `execution.execute`)."""

_EQUAL_JITTER = 0.5
"""A retry waits at least half its backoff envelope, so attempts are always spread out."""


class ToolRuns:
    """Runs the tool calls of one runtime: tries failed runs again, keeps the breakers.

    Args:
        clock: the runtime's clock (event times; the backoff is measured against it).
        sleep: how a short backoff is slept (tests may pass their own).
        rng: the backoff's jitter (not cryptography).
        monotonic: the breakers' clock.
    """

    def __init__(
        self,
        clock: Callable[[], datetime],
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self.rng = rng or random.Random()
        self.monotonic = monotonic
        self._breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, tool: Tool) -> CircuitBreaker | None:
        """The breaker of `tool` in this runtime (made on first use), None if it has none."""
        policy = tool.breaker
        if policy is None:
            return None
        found = self._breakers.get(tool.key)
        if found is None:
            found = self._breakers[tool.key] = CircuitBreaker(
                tool.key,
                failure_threshold=policy.failure_threshold,
                reset_after=policy.reset_after,
                clock=self.monotonic,
            )
        return found

    def gated(self, tool: Tool, call: PendingCall) -> bool:
        """Whether `gate` may have anything to do: a backoff, or a breaker not closed
        (False: `gate` would return None at once)."""
        if call.retry_at is not None:
            return True
        breaker = self._breakers.get(tool.key) if tool.breaker is not None else None
        return breaker is not None and breaker.state != "closed"

    async def gate(self, tool: Tool, call: PendingCall) -> Outcome | None:
        """Before a run (and its `tool_started`): sleep out a short backoff and return None,
        or return the events that take the run's place: a durable wait for a long backoff
        (a wait ended early, by a message or an event), or a refusal by an open breaker."""
        breaker = self.breaker(tool)
        if breaker is not None and not call.failed and breaker.state == "open":
            return _refused(tool, call, breaker)  # a new call; a retry was admitted already
        retry_at = call.retry_at
        if retry_at is None:
            return None
        remaining = (retry_at - self._clock()).total_seconds()
        if remaining > tool.retry.sleep_limit:
            return lambda seq, at: [retry_wait(tool.name, call.call_id, retry_at, seq, at)]
        if remaining > 0:
            await self._sleep(remaining + 0.001)  # never wake a hair before retry_at
        return None

    async def run(
        self, tool: Tool, thread_id: str, step: RunTool, stored: Stored | None = None
    ) -> Outcome | None:
        """Run attempt `step.attempt` of `step.call` (`execution.execute`) and return what
        to record: its outcome, or `tool_attempt_failed` (and a durable wait) when it is
        tried again. None as `execute`: a non-idempotent call's outcome is unknown."""
        call, attempt = step.call, step.attempt
        breaker = self.breaker(tool)
        # a retry was admitted with its first attempt: it takes no trial slot
        admitting = breaker if not call.failed else None
        if admitting is not None and admitting.admit() is not None:
            return _refused(tool, call, admitting)  # a trial call is in flight elsewhere
        try:
            outcome = await execute(tool, thread_id, call, attempt, step.args, stored)
        except BaseException:
            if admitting is not None:
                admitting.abandon()
            raise
        failure = None if outcome is None else outcome.failure
        if breaker is not None:
            _judge(breaker, outcome, failure)
        if outcome is None or failure is None or not _worth_retrying(tool, failure):
            return outcome
        if attempt >= tool.retry.max_attempts:
            return _last(outcome, failure, attempt)
        policy = tool.retry
        delay = backoff(
            attempt, policy.base_delay, policy.max_delay, self.rng, jitter=_EQUAL_JITTER
        )
        return _attempt_failed(tool, call.call_id, attempt, failure, delay)


def _judge(breaker: CircuitBreaker, outcome: ToolOutcome | None, failure: Failure | None) -> None:
    """Tell the breaker how the run went: a retryable failure or an unknown outcome says
    the tool is unwell; an answer (even an ordinary error) says it is healthy; a call whose
    arguments did not validate never ran and says nothing."""
    if outcome is None or (failure is not None and failure.retryable):
        breaker.record_failure()
    elif failure is not None and failure.error_type == NOT_VALID:
        breaker.abandon()
    else:
        breaker.record_success()


def _worth_retrying(tool: Tool, failure: Failure) -> bool:
    """Retryable, and safe: a timed-out run with side effects may have taken effect, and
    only an idempotent tool may run again then."""
    if not failure.retryable:
        return False
    return not (failure.error_type == TIMED_OUT and tool.side_effects and not tool.idempotent)


def _last(outcome: ToolOutcome, failure: Failure, attempt: int) -> ToolOutcome:
    """The final failure, saying how many attempts were made."""
    if attempt < 2:
        return outcome
    told = failure._replace(message=f"{failure.message} (after {attempt} attempts)")
    return dataclasses.replace(outcome, failure=told)


def _attempt_failed(
    tool: Tool, call_id: str, attempt: int, failure: Failure, delay: float
) -> Outcome:
    def build(seq: int, at: datetime) -> list[Event]:
        retry_at = at + timedelta(seconds=delay)
        events: list[Event] = [
            ToolAttemptFailed(
                seq=seq,
                at=at,
                call_id=call_id,
                tool=tool.name,
                attempt=attempt,
                error_type=failure.error_type,
                message=failure.message,
                retry_at=retry_at,
            )
        ]
        if delay > tool.retry.sleep_limit:
            events.append(retry_wait(tool.name, call_id, retry_at, seq + 1, at))
        return events

    return build


def _refused(tool: Tool, call: PendingCall, breaker: CircuitBreaker) -> Outcome:
    """The `tool_error` of a call refused by the tool's open breaker (it did not run)."""
    message = (
        f"tool {tool.name} is unavailable: it failed {breaker.failures} times in a row, so "
        f"calls are paused (circuit breaker open); it may be tried again in "
        f"{math.ceil(breaker.retry_in)}s. Choose another way, or try it later."
    )

    return ToolOutcome(tool.name, call.call_id, None, Failure("CircuitOpen", message, True), None)
