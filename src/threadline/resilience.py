"""Backoff and circuit breakers, shared by model providers and tools.

`threadline.models.resilience` retries a provider's requests and breaks its circuit;
`threadline.retries` does the same for tool calls. Both compute their waits with `backoff`
and keep a `CircuitBreaker` per provider or per tool; `ToolRetry` and `ToolBreaker` are
what a tool declares (`Tool(retry=..., breaker=...)`).

Nothing here does I/O or sleeps: the callers wait (in memory, or durably for a tool whose
backoff is long), and the breaker's clock is injectable so tests never wait.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import CircuitOpen, ConfigError

__all__ = ["CircuitBreaker", "ToolBreaker", "ToolRetry", "backoff"]


def backoff(
    attempt: int, base_delay: float, max_delay: float, rng: random.Random, *, jitter: float = 1.0
) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based).

    The envelope grows exponentially, c = min(max_delay, base_delay * 2**(attempt-1)), and
    the wait is uniform((1 - jitter) * c, c): `jitter` 1 is "full jitter" (spreads a fleet's
    retries the most, but may be close to 0), 0.5 is "equal jitter" (always at least c/2).
    """
    ceiling = min(max_delay, base_delay * 2 ** (attempt - 1))
    return rng.uniform((1 - jitter) * ceiling, ceiling)


class CircuitBreaker:
    """Fail fast while a provider (or a tool) is down, instead of piling up waiting calls.

    closed -> (failure_threshold failures in a row) -> open -> (reset_after seconds) ->
    half-open: one trial call; success closes, failure re-opens.

    The caller decides what counts as a failure: only retryable ones (429, 5xx, timeouts,
    connection errors for a provider; `RetryableToolError` and timeouts for a tool). A
    request the provider calls bad says nothing about its health.

    Args:
        name: what the breaker guards (a provider, or a tool's `name@version`).
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ConfigError("CircuitBreaker.failure_threshold must be at least 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_after = reset_after
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def provider(self) -> str:
        """The name, under the name the provider metrics use."""
        return self.name

    @property
    def failures(self) -> int:
        """Failures in a row so far."""
        return self._failures

    @property
    def retry_in(self) -> float:
        """Seconds until a trial call may go out (0 when closed or half-open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.reset_after - (self._clock() - self._opened_at))

    @property
    def state(self) -> str:
        """`closed`, `open` or `half-open`."""
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_after:
            return "half-open"
        return "open"

    def admit(self) -> float | None:
        """None when a call may go out now (when half-open: it is the one trial call), else
        the seconds until one may."""
        if self._opened_at is None:
            return None
        wait = self.retry_in
        if wait > 0:
            return wait
        if self._trial_in_flight:
            return 0.0
        self._trial_in_flight = True
        return None

    def check(self) -> None:
        """Raise `CircuitOpen` unless a call may go out now (see `admit`)."""
        wait = self.admit()
        if wait is not None:
            raise CircuitOpen(self.name, wait)

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False

    def abandon(self) -> None:
        """The call was cancelled before an outcome: free the half-open trial slot."""
        self._trial_in_flight = False

    def record_failure(self) -> None:
        self._failures += 1
        self._trial_in_flight = False
        if self._opened_at is not None or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()


@dataclass(frozen=True, slots=True)
class ToolRetry:
    """How hard the runtime tries one tool call (`Tool(retry=ToolRetry(...))`).

    A run is tried again when the tool raised `RetryableToolError`, or timed out (or raised
    `ToolOutcomeUnknown`) and running it again is safe: it has no side effects or is
    idempotent. The model sees the error only once the attempts are used up.

    Attributes:
        max_attempts: runs per call, the first included (1: never tried again).
        base_delay / max_delay: the backoff envelope in seconds: after attempt n the next
            waits between half and all of min(max_delay, base_delay * 2**(n-1)).
        sleep_limit: a backoff up to this many seconds is slept where the call runs; a
            longer one is a durable wait (the thread parks, holding no worker).
    """

    max_attempts: int = 3
    base_delay: float = 1.0
    max_delay: float = 300.0
    sleep_limit: float = 5.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("ToolRetry.max_attempts must be at least 1")
        if min(self.base_delay, self.max_delay, self.sleep_limit) < 0:
            raise ConfigError("ToolRetry delays must not be negative")


@dataclass(frozen=True, slots=True)
class ToolBreaker:
    """When to stop calling a failing tool for a while (`Tool(breaker=ToolBreaker(...))`).

    Attributes:
        failure_threshold: failed attempts in a row (retryable failures and outcomes
            unknown, over every call of the tool) that open the breaker.
        reset_after: seconds it stays open; then one trial call decides.
    """

    failure_threshold: int = 5
    reset_after: float = 30.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.reset_after < 0:
            raise ConfigError("ToolBreaker needs failure_threshold >= 1, reset_after >= 0")
