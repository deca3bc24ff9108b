"""Parallel tool calls (issue 13): the calls of one answer are validated together, approvals
are requested at once, runnable calls run concurrently, verdicts come in one batch."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from threadline import (
    Agent,
    InvalidAction,
    MemoryStore,
    Runtime,
    RunTools,
    Status,
    Thread,
    Verdict,
    decide,
    replay_thread,
    tool,
)
from threadline.testing import ScriptedModel, intent

RUNS: list[tuple[str, float, float]] = []
"""(name, start, end) of every slow tool run, by the monotonic clock the tools read."""


async def _slow(name: str) -> str:
    start = time.monotonic()
    await asyncio.sleep(1.0)
    RUNS.append((name, start, time.monotonic()))
    return f"{name} done"


@tool
async def fetch_orders(customer: str) -> str:
    """Read a customer's orders (read-only, takes a second)."""
    return await _slow(f"orders:{customer}")


@tool
async def fetch_invoices(customer: str) -> str:
    """Read a customer's invoices (read-only, takes a second)."""
    return await _slow(f"invoices:{customer}")


PAID: list[dict[str, Any]] = []


@tool(side_effects=True, approval="always")
def pay(invoice: str, amount: int) -> str:
    """Pay an invoice (needs a person's approval)."""
    PAID.append({"invoice": invoice, "amount": amount})
    return f"paid {invoice}"


def _agent(**options: Any) -> Agent:
    return Agent("books", tools=[fetch_orders, fetch_invoices, pay], **options)


@pytest.fixture(autouse=True)
def _clear() -> None:
    RUNS.clear()
    PAID.clear()


def _overlap(a: tuple[str, float, float], b: tuple[str, float, float]) -> bool:
    return a[1] < b[2] and b[1] < a[2]


BOTH = [intent("fetch_orders", customer="ana"), intent("fetch_invoices", customer="ana")]


async def _launch(answers: list[Any], message: str) -> tuple[Runtime, Agent, Thread, ScriptedModel]:
    model = ScriptedModel(answers)
    rt = Runtime(MemoryStore(), model=model)
    agent = _agent()
    return rt, agent, await rt.launch(agent, message), model


async def test_two_read_only_calls_of_one_answer_run_at_once() -> None:
    _, agent, thread, model = await _launch([BOTH, intent("done_for_now", message="ok")], "owe?")
    assert thread.status == Status.DONE
    assert len(RUNS) == 2 and _overlap(RUNS[0], RUNS[1]), RUNS
    kinds = [e.kind for e in thread.events]
    assert kinds[1:6] == ["model_call", "tool_call", "tool_call", "tool_result", "tool_result"]
    # the model saw both results in its next turn
    assert "orders:ana done" in model.contexts[1].as_text()
    assert "invoices:ana done" in model.contexts[1].as_text()
    replay_thread(agent, thread)


@pytest.mark.parametrize(
    "options",
    [
        {"max_parallel_tools": 1},
        {"resource_keys": {"fetch_orders": "crm", "fetch_invoices": "crm"}},
    ],
    ids=["limit-1", "same-resource"],
)
async def test_a_limit_of_one_or_a_shared_resource_runs_them_one_after_another(
    options: dict[str, Any],
) -> None:
    model = ScriptedModel([BOTH, intent("done_for_now", message="ok")])
    agent = _agent(**options)
    thread = await Runtime(MemoryStore(), model=model).launch(agent, "what does ana owe?")
    assert thread.status == Status.DONE
    assert len(RUNS) == 2 and not _overlap(RUNS[0], RUNS[1]), RUNS
    assert [r[0] for r in RUNS] == ["orders:ana", "invoices:ana"]  # in the model's order
    replay_thread(agent, thread)


def test_a_resource_key_function_sees_the_arguments() -> None:
    agent = _agent(resource_keys={"fetch_orders": lambda args: f"customer:{args.customer}"})
    assert agent.resource_key("fetch_orders", fetch_orders.validate({"customer": "ana"})) == (
        "customer:ana"
    )
    assert agent.resource_key("fetch_invoices", None) is None
    broken = _agent(resource_keys={"fetch_orders": lambda args: args.nothing})
    assert broken.resource_key("fetch_orders", None) == "tool:fetch_orders"


THREE_PAYMENTS = [
    intent("pay", invoice="A", amount=10),
    intent("pay", invoice="B", amount=20),
    intent("pay", invoice="C", amount=30),
]


async def test_three_approvals_are_requested_before_any_answer_then_one_batch() -> None:
    answers = [THREE_PAYMENTS, intent("done_for_now", message="paid")]
    rt, agent, thread, model = await _launch(answers, "pay the open invoices")
    assert thread.status == Status.AWAITING_APPROVAL
    kinds = [e.kind for e in thread.events]
    assert kinds[-3:] == ["approval_requested"] * 3
    assert "approval" not in kinds and PAID == []
    a, b, c = (e.call_id for e in thread.events[-3:])
    thread = await rt.approve_many(
        thread.id,
        [
            Verdict(a),
            Verdict(b, approved=False, comment="B is disputed"),
            Verdict(c, edited_arguments={"invoice": "C", "amount": 25}),
        ],
        by="ana",
    )
    approvals = [e for e in thread.events if e.kind == "approval"]
    assert [(e.call_id, e.approved, e.by) for e in approvals] == [
        (a, True, "ana"),
        (b, False, "ana"),
        (c, True, "ana"),
    ]
    assert approvals[0].seq + 2 == approvals[2].seq  # one append
    thread = await rt.advance(thread.id)
    assert thread.status == Status.DONE
    assert sorted(PAID, key=lambda p: p["invoice"]) == [
        {"invoice": "A", "amount": 10},
        {"invoice": "C", "amount": 25},
    ]
    assert "B is disputed" in model.contexts[1].as_text()
    replay_thread(agent, thread)


async def test_a_read_runs_while_the_other_call_awaits_its_approval() -> None:
    answer = [intent("fetch_orders", customer="bo"), intent("pay", invoice="Z", amount=5)]
    rt, agent, thread, _ = await _launch([answer, intent("done_for_now", message="ok")], "pay")
    assert thread.status == Status.AWAITING_APPROVAL
    kinds = [e.kind for e in thread.events]
    assert kinds[-2:] == ["approval_requested", "tool_result"]
    (call_id,) = [c.call_id for c in thread.state.pending.values()]
    await rt.approve(thread.id, call_id)
    thread = await rt.advance(thread.id)
    assert thread.status == Status.DONE and PAID == [{"invoice": "Z", "amount": 5}]
    replay_thread(agent, thread)


async def test_approving_one_of_two_runs_it_while_the_other_still_waits() -> None:
    model = ScriptedModel([THREE_PAYMENTS[:2], intent("done_for_now", message="ok")])
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(_agent(), "pay")
    first, second = thread.state.pending
    await rt.approve(thread.id, first)
    thread = await rt.advance(thread.id)
    assert thread.status == Status.AWAITING_APPROVAL
    assert PAID == [{"invoice": "A", "amount": 10}]
    assert list(thread.state.pending) == [second]


async def test_a_finish_beside_approvals_waits_for_them() -> None:
    answer = [intent("pay", invoice="A", amount=1), intent("done_for_now", message="paid")]
    rt = Runtime(MemoryStore(), model=ScriptedModel([answer]))
    thread = await rt.launch(_agent(), "pay A")
    assert thread.status == Status.AWAITING_APPROVAL
    await rt.approve(thread.id, next(iter(thread.state.pending)))
    thread = await rt.advance(thread.id)
    assert thread.status == Status.DONE and PAID == [{"invoice": "A", "amount": 1}]


async def test_a_batch_with_one_bad_verdict_writes_nothing() -> None:
    rt = Runtime(MemoryStore(), model=ScriptedModel([THREE_PAYMENTS[:2]]))
    thread = await rt.launch(_agent(), "pay")
    first, second = thread.state.pending
    before = thread.next_seq
    with pytest.raises(InvalidAction, match="nope"):
        await rt.approve_many(thread.id, [Verdict(first), Verdict("nope")])
    with pytest.raises(InvalidAction, match="twice"):
        await rt.approve_many(thread.id, [Verdict(first), Verdict(first, approved=False)])
    with pytest.raises(InvalidAction, match="amount"):
        await rt.approve_many(
            thread.id, [Verdict(first), Verdict(second, edited_arguments={"invoice": "B"})]
        )
    with pytest.raises(InvalidAction, match="at least one"):
        await rt.approve_many(thread.id, [])
    assert (await rt.store.load(thread.id)).next_seq == before


async def test_decide_makes_one_batch_of_the_runnable_calls() -> None:
    rt = Runtime(MemoryStore(), model=ScriptedModel([BOTH]))
    agent = _agent()
    thread = await rt.launch(agent, "x", advance=False)
    thread = await rt.advance(thread.id, max_steps=1)  # the model call only
    step = decide(agent, thread)
    assert isinstance(step, RunTools)
    assert [r.call.tool for r in step.runs] == ["fetch_orders", "fetch_invoices"]
