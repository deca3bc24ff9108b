"""Backoff and circuit breakers shared by providers and tools (threadline.resilience)."""

from __future__ import annotations

import random

import pytest

from threadline import ToolBreaker, ToolRetry
from threadline.errors import CircuitOpen, ConfigError
from threadline.resilience import CircuitBreaker, backoff


def test_backoff_grows_to_its_cap_and_equal_jitter_waits_at_least_half() -> None:
    rng = random.Random(3)
    for attempt in range(1, 12):
        ceiling = min(8.0, 0.5 * 2 ** (attempt - 1))
        full = [backoff(attempt, 0.5, 8.0, rng) for _ in range(200)]
        equal = [backoff(attempt, 0.5, 8.0, rng, jitter=0.5) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in full)
        assert all(ceiling / 2 <= d <= ceiling for d in equal)
        assert min(full) < ceiling / 2  # full jitter spreads over the whole envelope


def test_a_breaker_opens_lets_one_trial_through_and_closes_or_reopens() -> None:
    now = [0.0]
    breaker = CircuitBreaker("pricing", failure_threshold=2, reset_after=10, clock=lambda: now[0])
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.admit() is None
    breaker.record_failure()
    assert breaker.state == "open" and breaker.failures == 2
    now[0] = 4.0
    assert breaker.admit() == pytest.approx(6.0) and breaker.retry_in == pytest.approx(6.0)
    with pytest.raises(CircuitOpen) as refused:
        breaker.check()
    assert refused.value.provider == "pricing"
    now[0] = 10.0
    assert breaker.state == "half-open"
    assert breaker.admit() is None  # the one trial
    assert breaker.admit() == 0.0  # a second call waits for the trial's verdict
    breaker.record_failure()  # the trial failed: open again, for a full period
    assert breaker.state == "open" and breaker.retry_in == pytest.approx(10.0)
    now[0] = 20.0
    assert breaker.admit() is None
    breaker.abandon()  # cancelled: the trial slot is free again
    assert breaker.admit() is None
    breaker.record_success()
    assert breaker.state == "closed" and breaker.failures == 0


def test_tool_retry_and_breaker_settings_are_checked() -> None:
    assert ToolRetry().max_attempts == 3 and ToolBreaker().failure_threshold == 5
    with pytest.raises(ConfigError):
        ToolRetry(max_attempts=0)
    with pytest.raises(ConfigError):
        ToolRetry(base_delay=-1)
    with pytest.raises(ConfigError):
        ToolBreaker(failure_threshold=0)
    with pytest.raises(ConfigError):
        CircuitBreaker("x", failure_threshold=0)
