"""waits.py: a `Park` always has an end, the built-in wait tools bound what a model asks
for, an open breaker becomes a durable wait, and a parked thread ends its wait on the
awaited outside event (MemoryStore, a real Runtime)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from threadline import Agent, MemoryStore, Runtime
from threadline.errors import CircuitOpen
from threadline.events import ExternalEvent, Status, Waiting, utcnow
from threadline.models.base import Context
from threadline.testing import FunctionModel, intent
from threadline.tools import ToolContext
from threadline.waits import WAIT_TOOLS, Park, breaker_wait, sleep_until, wait_for_event

AT = datetime(2030, 1, 1, tzinfo=UTC)
CTX = ToolContext(thread_id="t", call_id="c", idempotency_key="k")


def test_a_park_needs_an_end_and_takes_naive_times_as_utc() -> None:
    with pytest.raises(ValueError, match="needs an end"):
        Park(reason="forever")
    naive = Park(until=datetime(2030, 1, 1, 9, 0))
    assert naive.until == datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
    assert Park(until=AT, event="paid").describe() == {
        "waiting": True,
        "until": "2030-01-01T00:00:00+00:00",
        "event": "paid",
    }


async def test_the_wait_tools_bound_what_the_model_asks_for() -> None:
    far = await sleep_until.invoke(sleep_until.validate({"until": "2999-01-01T00:00:00"}), CTX)
    assert isinstance(far, Park) and far.until is not None
    assert far.until - utcnow() <= timedelta(days=366)
    soon = await wait_for_event.invoke(
        wait_for_event.validate({"event": "paid", "timeout_seconds": -5}), CTX
    )
    assert isinstance(soon, Park) and soon.event == "paid" and soon.until is not None
    assert soon.until <= utcnow()
    assert {t.name for t in WAIT_TOOLS} == {"sleep_until", "wait_for_event"}


def test_an_open_breaker_waits_at_least_a_second_and_says_why() -> None:
    short = breaker_wait(CircuitOpen("openai", 0.2), seq=7, at=AT)
    assert isinstance(short, Waiting) and short.seq == 7 and short.at == AT
    assert short.until == AT + timedelta(seconds=1)
    long = breaker_wait(CircuitOpen("anthropic", 30.0), seq=7, at=AT)
    assert long.until == AT + timedelta(seconds=30)
    assert long.reason is not None and "anthropic" in long.reason and long.event is None


def _payee() -> Agent:
    def script(context: Context) -> object:
        if "payment" in context.as_text() and "amount" in context.as_text():
            return intent("done_for_now", message="paid")
        return intent("wait_for_event", event="payment", timeout_seconds=3600)

    return Agent("payee", tools=list(WAIT_TOOLS), model=FunctionModel(script))


async def test_a_parked_thread_holds_nothing_and_wakes_on_its_event() -> None:
    store = MemoryStore()
    payee = _payee()
    rt = Runtime(store, agents=[payee])
    parked = await rt.launch(payee, "wait for the payment")
    assert parked.status == Status.WAITING
    row = await store.get(parked.id)
    assert row.due_at is not None and row.lease_owner is None
    assert (await store.lease("w", ttl=30)) == []  # not due: no worker takes it
    other = await rt.external_event(parked.id, "refund", {"amount": 1})
    assert other.status == Status.WAITING  # not the awaited event: the wait goes on
    await rt.external_event(parked.id, "payment", {"amount": 5}, source="bank")
    done = await rt.advance(parked.id)
    assert done.status == Status.DONE
    event = [e for e in done.events if isinstance(e, ExternalEvent)][-1]
    assert event.payload == {"amount": 5} and event.source == "bank"
