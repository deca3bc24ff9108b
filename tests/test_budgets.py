"""Budgets (issue 13): per thread and per tree, reserved before each model call, settled to
what it used; exhausting one escalates with the figures; totals survive restarts."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from airline_support import run_recorded, tau_runs
from budget_support import OUT, PRICE, biggest_reservation, left_open, lookup, runaway, spend
from threadline import (
    Agent,
    Budget,
    ConfigError,
    InvalidAction,
    MemoryStore,
    Runtime,
    SQLiteStore,
    Status,
    ThreadNotFound,
    replay_thread,
    tool,
)
from threadline.composition import children
from threadline.events import BudgetRaised, BudgetReserved, BudgetSettled, Escalated, ThreadState
from threadline.models.base import Context, ModelOutput, ModelProfile
from threadline.models.pricing import PriceTable
from threadline.stores import Store, tree_totals
from threadline.testing import FunctionModel, ScriptedModel, intent


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    made: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "t.db")
    yield made
    await made.close()


async def test_a_runaway_model_is_stopped_by_the_cost_budget_within_one_call(
    store: Store,
) -> None:
    limit = 0.01
    agent = Agent(
        "spender", tools=[lookup], model=runaway(), max_steps=1000, budget=Budget(max_usd=limit)
    )
    rt = Runtime(store, agents=[agent])
    thread = await rt.launch(agent, "look everything up")
    assert thread.status == Status.ESCALATED
    calls, tokens, usd = spend(thread)
    one_call = biggest_reservation(thread).usd
    assert usd <= limit + one_call  # the brief's bound ...
    assert usd <= limit  # ... and, reserving the output cap, the limit itself holds
    assert limit - usd < 2 * one_call  # stopped near the limit, not long before it
    assert calls == thread.state.model_calls >= 5
    last = thread.events[-1]
    assert isinstance(last, Escalated) and last.details["source"] == "budget"
    assert last.details["scope"] == "thread" and last.details["exceeded"] == ["usd"]
    figures = last.details["figures"]["usd"]
    assert figures["limit"] == limit and figures["used"] == pytest.approx(usd)
    assert figures["used"] + figures["next"] > limit
    assert "usd" in last.reason and "limit" in last.reason
    # no reservation is left open, and replay re-derives every event from the log
    assert thread.state.reserved_usd is None
    assert thread.state.spent_usd == pytest.approx(usd)
    replayed = replay_thread(agent, await store.load(thread.id))
    assert [e.kind for e in replayed.events] == [e.kind for e in thread.events]


async def test_calls_and_tokens_budgets_and_the_figures_of_each_kind(store: Store) -> None:
    agent = Agent(
        "counted",
        tools=[lookup],
        model=runaway(),
        max_steps=1000,
        budget=Budget(max_model_calls=3),
    )
    rt = Runtime(store, agents=[agent])
    thread = await rt.launch(agent, "go")
    assert thread.status == Status.ESCALATED and thread.state.model_calls == 3
    details = thread.events[-1].details  # type: ignore[union-attr]
    assert details["exceeded"] == ["model_calls"]
    assert details["figures"]["model_calls"] == {"used": 3, "reserved": 0, "next": 1, "limit": 3}
    assert set(details["figures"]) == {"model_calls", "tokens", "usd"}

    tokens = await rt.launch(agent, "go", budget=Budget(max_tokens=2000))
    assert tokens.status == Status.ESCALATED
    used = spend(tokens)[1]
    assert used <= 2000
    assert tokens.events[-1].details["exceeded"] == ["tokens"]  # type: ignore[union-attr]
    assert tokens.metadata["budget"] == {"max_tokens": 2000}  # the launch's own budget


async def test_a_thread_under_no_budget_records_nothing(store: Store) -> None:
    model = ScriptedModel([intent("lookup", n=1), intent("done_for_now", message="ok")])
    agent = Agent("free", tools=[lookup], model=model)
    thread = await Runtime(store, agents=[agent]).launch(agent, "go")
    assert thread.status == Status.DONE
    assert not [e for e in thread.events if e.kind.startswith("budget_")]


def test_a_budget_validates_its_numbers() -> None:
    with pytest.raises(ValidationError):
        Budget(max_usd=-1)
    with pytest.raises(ValidationError):
        Budget(max_tokens=-5)
    with pytest.raises(ValidationError):
        Budget(max_usd=float("nan"))
    with pytest.raises(ValidationError):
        Budget.model_validate({"max_dollars": 3})
    with pytest.raises(ConfigError, match="budget must be a threadline.Budget"):
        Agent("a", budget={"max_usd": 1})  # type: ignore[arg-type]


async def test_a_usd_budget_over_a_model_without_a_price_is_refused_at_start() -> None:
    unpriced = runaway("mystery", price=None)
    agent = Agent("a", tools=[lookup], model=unpriced, budget=Budget(max_usd=1))
    with pytest.raises(ConfigError, match="needs the price of model mystery"):
        Runtime(MemoryStore(), agents=[agent])
    free = Agent("b", tools=[lookup], model=unpriced)
    rt = Runtime(MemoryStore(), agents=[free])
    with pytest.raises(ConfigError, match="needs the price"):
        await rt.launch(free, "go", budget=Budget(max_usd=1))
    # a budget of calls or tokens needs no price
    capped = await rt.launch(free, "go", budget=Budget(max_model_calls=2))
    assert capped.status == Status.ESCALATED and capped.state.model_calls == 2
    # a sub-agent without a price under a USD tree budget: refused at start too
    sub = Agent("sub", tools=[lookup], model=unpriced)
    top = Agent("top", tools=[sub.as_tool()], model=runaway(), tree_budget=Budget(max_usd=1))
    with pytest.raises(ConfigError, match="agent sub"):
        Runtime(MemoryStore(), agents=[top])


def _tree(limit: float, on_answer: Callable[[], None] | None = None) -> Agent:
    """A coordinator that hands work to two runaway specialists, under one tree budget."""
    left = Agent("left", tools=[lookup], model=runaway(on_answer=on_answer), max_steps=1000)
    right = Agent("right", tools=[lookup], model=runaway(on_answer=on_answer), max_steps=1000)
    answers = [
        [intent("left", task="look up the left half"), intent("right", task="the right half")],
        intent("done_for_now", message="both halves done"),
    ]
    return Agent(
        "coordinator",
        tools=[left.as_tool(), right.as_tool()],
        model=ScriptedModel(answers, profile=ModelProfile(price=PRICE), follow_thread=True),
        tree_budget=Budget(max_usd=limit),
    )


async def test_a_tree_budget_shared_by_a_parent_and_two_children_stops_the_tree(
    store: Store,
) -> None:
    limit = 0.02
    coordinator = _tree(limit)
    rt = Runtime(store, agents=[coordinator])
    root = await rt.launch(coordinator, "look everything up")
    root = await store.load(root.id)
    # The two calls run at once: their child_started events land in the order the lanes
    # got there (docs/composition.md: a fact of the run), so the children go by agent.
    kids = sorted([await store.load(c) for c in children(root)], key=lambda k: k.agent)
    assert [k.agent for k in kids] == ["left", "right"]
    assert all(k.status == Status.ESCALATED for k in kids)
    assert root.status == Status.ESCALATED
    root_end = next(e for e in reversed(root.events) if isinstance(e, Escalated))
    assert root_end.details["source"] == "budget" and root_end.details["scope"] == "tree"
    assert root_end.details["root"] == root.id
    tree = [root, *kids]
    usd = sum(spend(t)[2] for t in tree)
    assert usd <= limit
    assert limit - usd < 3 * max(biggest_reservation(k).usd for k in kids)
    assert sum(spend(k)[0] for k in kids) >= 5  # the children spent from the one budget
    totals = await tree_totals(store, root.id)
    assert totals is not None
    assert totals.reserved[:2] == (0, 0) and totals.reserved[2] == pytest.approx(0, abs=1e-12)
    assert totals.used[0] == sum(spend(t)[0] for t in tree)
    assert totals.used[1] == sum(spend(t)[1] for t in tree)
    assert totals.used[2] == pytest.approx(usd)
    for kid in kids:
        assert kid.metadata["tree_budget"] == {"max_usd": limit}
        ended = kid.events[-1]
        assert isinstance(ended, Escalated) and ended.details["scope"] == "tree"
        figures = ended.details["figures"]["usd"]
        assert figures["used"] + figures["reserved"] + figures["next"] > limit
        replay_thread(rt.agent(kid.agent), kid)
    replay_thread(coordinator, root)


async def test_a_restart_mid_tree_keeps_the_totals(tmp_path: Path) -> None:
    path = tmp_path / "tree.db"
    first = SQLiteStore(path)
    answered = 0

    def stop_after_three() -> None:  # the process "dies" after three children's answers
        nonlocal answered
        answered += 1
        if answered == 3:
            rt.stop()

    rt = Runtime(first, agents=[_tree(0.02, stop_after_three)])
    root = await rt.launch("coordinator", "look everything up")
    kids = children(await first.load(root.id))
    assert len(kids) == 2
    # ... and one child had reserved its next call when it died: the reservation is open
    kid = await first.load(kids[0])
    assert kid.status == Status.RUNNING
    open_one = left_open(kid, 0.0031, tree=root.id, tree_budget=Budget(max_usd=0.02))
    await first.append(kid.id, [open_one], expected_seq=kid.next_seq)
    before = await tree_totals(first, root.id)
    assert before is not None and before.used[0] >= 4 and before.reserved[0] == 1
    await first.close()

    second = SQLiteStore(path)  # a new process: nothing in memory
    assert await tree_totals(second, root.id) == before
    rt2 = Runtime(second, agents=[_tree(0.02)])
    for k in kids:
        await rt2.advance(k)
    threads = [await second.load(t) for t in (root.id, *kids)]
    assert all(t.status == Status.ESCALATED for t in threads)
    after = await tree_totals(second, root.id)
    assert after is not None and after.reserved[0] == 0
    assert after.used[0] == sum(spend(t)[0] for t in threads) > before.used[0] + 1
    assert after.used[2] == pytest.approx(sum(spend(t)[2] for t in threads))
    assert after.used[2] <= 0.02
    leftover = next(
        e for e in threads[1].events if isinstance(e, BudgetSettled) and e.seq > open_one.seq
    )
    assert leftover.usd == 0.0031 and leftover.calls == 1  # settled in full
    await second.close()


async def test_a_reservation_a_crash_left_open_is_settled_in_full(store: Store) -> None:
    agent = Agent(
        "crashy", tools=[lookup], model=runaway(), max_steps=1000, budget=Budget(max_usd=1)
    )
    rt = Runtime(store, agents=[agent])
    thread = await rt.launch(agent, "go", advance=False)
    # what a process that died during the model call leaves: a reservation, no answer
    open_one = left_open(thread, 0.5)
    await store.append(thread.id, [open_one], expected_seq=thread.next_seq)
    thread = await rt.advance(thread.id, max_steps=1)
    settled = [e for e in thread.events if isinstance(e, BudgetSettled)]
    assert settled[0].usd == 0.5 and settled[0].calls == 1  # counted in full
    assert thread.state.spent_usd >= 0.5


async def test_budgets_on_the_recorded_airline_conversations() -> None:
    """Every 10th of the 200 recorded GPT-4o airline conversations (../shared/data), priced
    as gpt-4o: a budget they stay within records one reservation and one settlement per
    model call and replays; half of what a run spent, as a USD limit, stops it early."""
    price = PriceTable().price("gpt-4o")
    assert price is not None
    gpt4o = ModelProfile.for_id("gpt-4o", price=price)
    stopped_runs = 0
    for run in tau_runs()[::10]:
        agent, full = await run_recorded(
            run, profile=gpt4o, budget=Budget(max_usd=100), max_consecutive_errors=3
        )
        calls = sum(e.kind in ("model_call", "model_error") for e in full.events)
        reserved = [e for e in full.events if isinstance(e, BudgetReserved)]
        assert len(reserved) == spend(full)[0] == calls > 0  # a provider error is a call
        assert full.state.reserved_usd is None and full.state.spent_usd > 0
        assert all(
            e.usd == pytest.approx(price.cost(e.input_tokens, e.output_tokens)) for e in reserved
        )
        replay_thread(agent, full)
        half = full.state.spent_usd / 2
        agent, stopped = await run_recorded(
            run, profile=gpt4o, budget=Budget(max_usd=half), max_consecutive_errors=3
        )
        assert stopped.state.spent_usd <= half
        assert stopped.state.model_calls < full.state.model_calls
        if stopped.status == Status.ESCALATED:
            stopped_runs += 1
            assert stopped.events[-1].details["exceeded"] == ["usd"]  # type: ignore[union-attr]
        replay_thread(agent, stopped)
    assert stopped_runs >= 15


async def test_a_malformed_budget_in_metadata_is_refused_at_launch_and_escalates_later(
    tmp_path: Path,
) -> None:
    agent = Agent("a", tools=[lookup], model=runaway(), max_steps=1000)
    store = SQLiteStore(tmp_path / "t.db")
    rt = Runtime(store, agents=[agent])
    for bad in ({"max_usd": -1}, "lots", {"max_calls": 3}):
        with pytest.raises(ConfigError, match="is not a budget"):
            await rt.launch(agent, "go", metadata={"budget": bad})
    # a row damaged after the launch: the thread escalates saying why, nothing crashes
    thread = await rt.launch(agent, "go", budget=Budget(max_model_calls=5), advance=False)
    with sqlite3.connect(tmp_path / "t.db") as conn:
        damaged = json.dumps({"budget": {"max_model_calls": -5}})
        conn.execute("UPDATE threads SET metadata = ? WHERE id = ?", (damaged, thread.id))
    ended = await rt.advance(thread.id)
    assert ended.status == Status.ESCALATED
    assert "the thread's budget is not a budget" in ended.events[-1].reason  # type: ignore[union-attr]
    assert ended.events[-1].details["source"] == "budget"  # type: ignore[union-attr]
    assert ended.state.model_calls == 0
    await store.close()


async def test_a_raised_budget_is_an_event_the_state_and_replay_follow(store: Store) -> None:
    """`Runtime.raise_budget` writes `budget_raised`; the status derived from the log goes
    from escalated back to running, the next call is reserved against the new limits (the
    kinds not given kept), a reload (the stores' state cache) and replay agree. Refused,
    nothing written: a limit below the current one (though above what was used), a tree's
    exhausted budget, an unknown thread."""
    agent = Agent(
        "counted",
        tools=[lookup],
        model=runaway(),
        max_steps=1000,
        budget=Budget(max_model_calls=2, max_tokens=100_000),
    )
    rt = Runtime(store, agents=[agent])
    thread = await rt.launch(agent, "go")
    assert thread.status == Status.ESCALATED and thread.state.model_calls == 2
    with pytest.raises(InvalidAction, match="tokens limit is 100000; 50000 is lower"):
        await rt.raise_budget(thread.id, Budget(max_tokens=50_000))
    with pytest.raises(ThreadNotFound):
        await rt.raise_budget("th_nope", Budget(max_model_calls=3))
    assert len(await store.load(thread.id)) == len(thread)

    raised = await rt.raise_budget(thread.id, Budget(max_model_calls=4), by="ops")
    assert raised.status == Status.RUNNING
    event = raised.events[-1]
    assert isinstance(event, BudgetRaised) and event.by == "ops"
    assert event.budget == Budget(max_model_calls=4, max_tokens=100_000)
    assert raised.state.budget == event.budget
    loaded = await store.load(thread.id)
    assert loaded.status == Status.RUNNING and loaded.state.budget == event.budget
    assert ThreadState.from_dict(loaded.state.to_dict()).budget == event.budget
    ran = await rt.advance(loaded)
    assert ran.status == Status.ESCALATED and ran.state.model_calls == 4
    assert ran.events[-1].details["figures"]["model_calls"]["limit"] == 4  # type: ignore[union-attr]
    replayed = replay_thread(agent, await store.load(thread.id))
    assert [e.kind for e in replayed.events] == [e.kind for e in ran.events]

    coordinator = _tree(0.02)
    tree_rt = Runtime(store, agents=[coordinator])
    root = await tree_rt.launch(coordinator, "look everything up")
    kid = await store.load(children(await store.load(root.id))[0])
    assert kid.status == Status.ESCALATED
    with pytest.raises(InvalidAction, match="not by its own budget"):
        await tree_rt.raise_budget(kid.id, Budget(max_usd=1))


GATES: dict[str, asyncio.Event] = {}


@tool
async def slow_read(n: int) -> str:
    """A read-only lookup held in its answer's turn, until the test opens its gate."""
    GATES["reading"].set()
    await GATES["read"].wait()
    return f"record {n}"


def _gated(**options: Any) -> Agent:
    """An agent under a budget whose model reports real usage (input + `OUT` tokens, less
    than the 256 reserved for output); `asking` is set while a call is in flight, which
    waits for the gate `answer`; `slow_read` sets `reading` and waits for `read`."""
    GATES.clear()
    GATES.update({k: asyncio.Event() for k in ("asking", "answer", "reading", "read")})

    async def answer(context: Context) -> ModelOutput:
        GATES["asking"].set()
        await GATES["answer"].wait()
        text = json.dumps(intent("slow_read", n=context.model_calls))
        tokens = context.input_tokens or 0
        return ModelOutput(text=text, model="priced", input_tokens=tokens, output_tokens=OUT)

    profile = ModelProfile(max_output_tokens=256, price=PRICE)
    model = FunctionModel(answer, model_id="priced", profile=profile)
    return Agent("gated", tools=[slow_read], model=model, max_steps=1000, **options)


def _known(reserved: BudgetReserved) -> tuple[int, int, float]:
    """What a call of `_gated` reserved at `reserved` used (its input and `OUT` tokens)."""
    tokens = reserved.input_tokens + OUT
    return 1, tokens, round(PRICE.cost(reserved.input_tokens, OUT), 8)


async def test_a_dropped_answer_s_reservation_is_settled_to_what_the_call_used(
    store: Store,
) -> None:
    """An answer that arrives after the thread was cancelled is dropped, not written: its
    reservation is settled on its own, to what the call used (not in full, as after a
    crash), and the tree's totals hold nothing reserved for it."""
    agent = _gated(tree_budget=Budget(max_usd=1))
    rt = Runtime(store, agents=[agent])
    thread = await rt.launch(agent, "look it up", advance=False)
    running = asyncio.create_task(rt.advance(thread))
    await asyncio.wait_for(GATES["asking"].wait(), 10)  # the call is in flight
    await rt.cancel(thread.id, by="ops")
    GATES["answer"].set()
    GATES["read"].set()  # its read-only tool runs in memory; the turn's commit conflicts
    await asyncio.wait_for(running, 10)
    ended = await store.load(thread.id)
    assert ended.status == Status.FAILED and ended.state.reserved_tokens is None
    (reserved,) = [e for e in ended.events if isinstance(e, BudgetReserved)]
    assert [e.kind for e in ended.events[reserved.seq :]] == [
        "budget_reserved",
        "failed",
        "budget_settled",
    ]  # the answer was dropped; its reservation settled after the cancel
    settled = ended.events[-1]
    assert isinstance(settled, BudgetSettled)
    assert (settled.calls, settled.tokens, settled.usd) == _known(reserved)
    assert settled.tokens < reserved.tokens  # not in full
    totals = await tree_totals(store, thread.id)
    assert totals is not None and totals.reserved[:2] == (0, 0)
    assert totals.used[:2] == (1, settled.tokens)


async def test_a_cancelled_advance_s_reservation_is_settled_to_what_the_call_used(
    store: Store,
) -> None:
    """An advance cancelled while its answer's read-only tool runs (held in memory, not
    yet written) leaves the reservation open; this process knows what the call used, so
    its next reservation settles it to that, not in full. (A reservation it knows nothing
    of, a crash's, is still settled in full: `test_a_restart_mid_tree_keeps_the_totals`.)"""
    agent = _gated(budget=Budget(max_model_calls=3))
    GATES["answer"].set()
    rt = Runtime(store, agents=[agent])
    thread = await rt.launch(agent, "look it up", advance=False)
    running = asyncio.create_task(rt.advance(thread))
    await asyncio.wait_for(GATES["reading"].wait(), 10)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    left = await store.load(thread.id)
    assert left.state.reserved_tokens is not None and left.state.model_calls == 0
    (first,) = [e for e in left.events if isinstance(e, BudgetReserved)]

    GATES["read"].set()
    ran = await rt.advance(left)
    assert ran.status == Status.ESCALATED and ran.state.spent_calls == 3  # the dropped one too
    assert ran.state.model_calls == 2
    settled = ran.events[first.seq + 1]
    assert isinstance(settled, BudgetSettled)
    assert (settled.calls, settled.tokens, settled.usd) == _known(first)  # not in full
    assert settled.tokens < first.tokens
