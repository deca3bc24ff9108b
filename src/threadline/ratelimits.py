"""Client-side rate limits shared through the store: a fleet stays under a quota.

Limits are per model provider (calls per interval, and tokens per interval) and per tool
(calls per interval), configured typed (`Agent(rate_limits=RateLimits(...))`) and from the
environment (`THREADLINE_RATE_LIMITS`, which wins for the keys it names):

    THREADLINE_RATE_LIMITS="model:openai=500/1m, tokens:openai=200000/1m, tool:search=5/1s"

A `model:` or `tokens:` name is a provider (`openai`, the part of a model id before the
colon) or a whole model id (`openai:gpt-4.1-mini`, which wins over its provider). The
counters live in the store (`threadline.stores.ratelimits`), so every worker and process
on it draws from the same ones.

Before a model call (or a tool run), the runtime asks for a `Permit`. A call over a limit
does not wait in memory: the runtime records a `waiting` event with the limit's key
(`Waiting.rate_limit`) and a time to come back (a ticket from a queue per limit, so the
threads held back come back one by one as calls free up), and the thread is released. A worker (or
the server's runner) wakes it when due and the call asks again; a process killed while a
call waits loses nothing. Such waits are not errors, and the model never sees them.

Invariants:
    * A call counts against a `calls` limit from when it is let through until the limit's
      interval after it ended (`stores/ratelimits.py`): a provider sees at most `calls` in
      any window of the interval.
    * Tokens are taken before the call as an estimate (the context's tokens plus its
      output reservation) and settled with what the call used afterwards.
    * No configured limit: no store access at all.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from .events import Event, Waiting
from .models.base import Context, Model, ModelOutput
from .rate_config import Rate, RateLimits
from .stores import rate_limit_store
from .stores.base import Store
from .stores.ratelimits import RateLimitStore

__all__ = ["NO_LIMIT", "Limited", "Permit", "Rate", "RateLimiter", "RateLimits"]

log = logging.getLogger("threadline.ratelimits")

WaitBuilder = Callable[[int, datetime], list[Event]]
Release = Callable[[float | None, ModelOutput | None], Awaitable[None]]
"""Called with the end time (epoch seconds) and the answer when a let-through call ends;
with None for the end when the call was never made (`Permit.unused`)."""


class Limited(Protocol):
    """What the limiter reads of an agent (`threadline.Agent` is one): its own limits."""

    @property
    def rate_limits(self) -> RateLimits | None: ...


@dataclass(frozen=True, slots=True)
class Permit:
    """What a call may do: go (then `done` when it ends) or `wait` (record it and stop)."""

    wait: WaitBuilder | None = None
    releases: tuple[Release, ...] = ()
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    async def done(self, out: ModelOutput | None = None) -> None:
        """The call ended (`out`: a model's answer, None after an error or a cancellation):
        free its slots from the interval after now and settle its tokens. Never raises: a
        failure leaves the slot held until it lapses."""
        if self.releases:
            await self._release(self.clock().timestamp(), out)

    async def unused(self) -> None:
        """The call was never made (a budget refused it, or someone acted meanwhile): its
        slots are free again at once and its tokens given back. Never raises."""
        if self.releases:
            await self._release(None, None)

    async def _release(self, end: float | None, out: ModelOutput | None) -> None:
        for release in self.releases:
            try:
                await release(end, out)
            except Exception as exc:
                log.warning("releasing a rate-limit slot failed: %s: %s", type(exc).__name__, exc)


NO_LIMIT = Permit()
"""The permit of a call no limit applies to."""


class RateLimiter:
    """Asks the store's counters whether a call may go now (see the module docstring).

    Args:
        store: the store whose counters are shared (`threadline.stores.rate_limit_store`).
        limits: limits for every agent (the environment's); they win over an agent's own.
        clock: the runtime's clock.
        rng: the jitter added to waits for tokens (injectable for tests).
    """

    def __init__(
        self,
        store: Store,
        limits: RateLimits | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.limits = limits or RateLimits()
        self.clock = clock
        self._rng = rng or random.Random()  # jitter, not cryptography
        self._counters: RateLimitStore | None = None

    def of(self, agent: Limited) -> RateLimits:
        """The limits `agent`'s calls keep."""
        own: RateLimits | None = agent.rate_limits
        return self.limits if own is None else self.limits.over(own)

    def off(self, agent: Limited) -> bool:
        """No limit applies to `agent`'s calls: every permit is `NO_LIMIT` (the runtime
        then asks for none)."""
        return not self.limits and agent.rate_limits is None

    def limits_tool(self, agent: Limited, tool: str) -> bool:
        if self.off(agent):
            return False
        return self.of(agent).find("tool", tool) is not None

    async def model_call(self, agent: Limited, model: Model, context: Context) -> Permit:
        """A permit for one model call with `context`."""
        if self.off(agent):
            return NO_LIMIT
        limits = self.of(agent)
        calls, tokens = limits.find("model", model.model_id), limits.find("tokens", model.model_id)
        if calls is None and tokens is None:
            return NO_LIMIT
        releases: list[Release] = []
        now = self.clock().timestamp()
        if tokens is not None:
            key, rate = tokens
            cost = float(estimate_tokens(context))
            taken = await self._counters_().take_tokens(
                key, rate.limit, rate.limit / rate.per, cost, now=now
            )
            if not taken.granted:
                # Not queued: a little jitter so the callers held back spread out.
                later = max(0.0, taken.retry_at - now) * self._rng.uniform(1.0, 1.1)
                return Permit(wait=rate_limit_wait(key, rate, _at(now + later)))
            releases.append(self._settle(key, cost))
        if calls is not None:
            key, rate = calls
            held = await self._take_slot(key, rate, limits.hold, now)
            if held.wait is not None:
                await Permit(None, tuple(releases), self.clock).done(None)  # tokens back
                return held
            releases.extend(held.releases)
        return Permit(None, tuple(releases), self.clock)

    async def tool_call(self, agent: Limited, tool: str) -> Permit:
        """A permit for one run of `tool`."""
        if self.off(agent):
            return NO_LIMIT
        limits = self.of(agent)
        found = limits.find("tool", tool)
        if found is None:
            return NO_LIMIT
        key, rate = found
        return await self._take_slot(key, rate, limits.hold, self.clock().timestamp())

    async def _take_slot(self, key: str, rate: Rate, hold: float, now: float) -> Permit:
        counters = self._counters_()
        taken = await counters.take_slot(key, rate.limit, now=now, per=rate.per, hold=hold)
        if not taken.granted:  # a ticket: the callers held back come back one by one
            return Permit(wait=rate_limit_wait(key, rate, _at(max(taken.retry_at, now))))
        slot, held = taken.slot, taken.held_until

        async def free(end: float | None, out: ModelOutput | None) -> None:
            # Never made: free from when it was taken (it was free then). Only while this
            # call still holds the slot: once its hold lapsed, another call may have it.
            free_at = now if end is None else end + rate.per
            await counters.free_slot(key, slot, free_at, held_until=held)

        return Permit(None, (free,), self.clock)

    def _settle(self, key: str, cost: float) -> Release:
        async def settle(end: float | None, out: ModelOutput | None) -> None:
            # An error: the provider charged nothing. No usage reported: keep the estimate.
            used = 0.0 if out is None else float(out.input_tokens + out.output_tokens) or cost
            if used != cost:
                await self._counters_().settle(key, used - cost)

        return settle

    def _counters_(self) -> RateLimitStore:
        if self._counters is None:
            self._counters = rate_limit_store(self.store)
        return self._counters


def rate_limit_wait(key: str, rate: Rate, until: datetime) -> WaitBuilder:
    """The durable wait of a call held back by the limit `key` until `until`."""

    def build(seq: int, at: datetime) -> list[Event]:
        end = max(until, at + timedelta(milliseconds=1))
        reason = (
            f"rate limit {key} ({rate.limit} per {rate.per:g}s): the call goes at "
            f"{end.isoformat(timespec='milliseconds')}"
        )
        return [Waiting(seq=seq, at=at, until=end, reason=reason, rate_limit=key)]

    return build


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def estimate_tokens(context: Context) -> int:
    """The tokens a call with `context` may use: its input (the renderer's count, else
    about four characters a token) and its output reservation."""
    if context.input_tokens is not None:
        sent = context.input_tokens
    else:
        sent = (len(context.system) + sum(len(m.content) for m in context.messages)) // 4
    return sent + context.max_output_tokens
