"""A tree budget over two workers on PostgreSQL (issue 13): sibling threads of one tree,
advanced at the same time by different workers (own runtimes, own connection pools),
cannot pass the tree's budget together."""

from __future__ import annotations

import asyncio

import pytest

from budget_support import PRICE, lookup, runaway, spend
from pg_support import pg_store_url
from threadline import Agent, Budget, Runtime, Status, Worker
from threadline.budgets import child_metadata
from threadline.events import BudgetReserved, Escalated
from threadline.models.base import ModelProfile
from threadline.stores import open_store, tree_totals
from threadline.testing import ScriptedModel, intent

pytestmark = pytest.mark.postgres

LIMIT = 0.03
PRICED = ModelProfile(price=PRICE)


def _agents() -> tuple[Agent, Agent, Agent]:
    left = Agent("left", tools=[lookup], model=runaway(), max_steps=1000)
    right = Agent("right", tools=[lookup], model=runaway(), max_steps=1000)
    root = Agent(
        "root",
        tools=[left.as_tool(), right.as_tool()],
        model=ScriptedModel([intent("done_for_now", message="-")], profile=PRICED),
        tree_budget=Budget(max_usd=LIMIT),
    )
    return root, left, right


async def test_siblings_on_two_workers_cannot_jointly_pass_the_tree_budget(
    postgres_url: str, pg_schema: str
) -> None:
    url = pg_store_url(postgres_url, pg_schema)
    setup, store_a, store_b = open_store(url), open_store(url), open_store(url)
    try:
        root_agent, left, right = _agents()
        rt = Runtime(setup, agents=[root_agent])
        root = await rt.launch(root_agent, "split the work", advance=False)
        inherited = child_metadata(root_agent, root)
        assert inherited == {"tree_budget": {"max_usd": LIMIT}}
        kids = []
        for i, agent in enumerate((left, right)):
            meta = {
                "parent_thread": root.id,
                "parent_call": f"c{i}",
                "ancestors": [{"thread": root.id, "agent": "root", "call": f"c{i}"}],
                **inherited,
            }
            kids.append(await rt.launch(agent.name, "look it all up", metadata=meta, advance=False))
        # worker A serves only `left`, worker B only `right`: the siblings run on both at once
        worker_a = Worker(Runtime(store_a, agents=[left]), poll_interval=0.05, owner="A")
        worker_b = Worker(Runtime(store_b, agents=[right]), poll_interval=0.05, owner="B")
        stats = await asyncio.gather(worker_a.run(until_idle=True), worker_b.run(until_idle=True))
        assert all(s.advanced >= 1 for s in stats)
        loaded = [await setup.load(k.id) for k in kids]
        assert all(k.status == Status.ESCALATED for k in loaded)
        spent = [spend(k) for k in loaded]
        assert all(calls >= 2 for calls, _, _ in spent)  # both spent from the one budget
        usd = sum(s[2] for s in spent)
        assert usd <= LIMIT
        one_call = max(e.usd for k in loaded for e in k.events if isinstance(e, BudgetReserved))
        assert LIMIT - usd < 3 * one_call  # stopped near the limit, not long before it
        totals = await tree_totals(setup, root.id)
        assert totals is not None
        assert totals.used[0] == sum(s[0] for s in spent)
        assert totals.used[2] == pytest.approx(usd)
        assert totals.reserved[0] == 0
        # Both workers' reservations overlapped in time: a sibling's reservation was
        # refused while the other one's figures held some reserved amount, or the two
        # alternated (the calls interleave by their times).
        times = sorted(
            (e.at, k.agent) for k in loaded for e in k.events if isinstance(e, BudgetReserved)
        )
        switches = sum(1 for a, b in zip(times, times[1:], strict=False) if a[1] != b[1])
        assert switches >= 2, "the workers never ran at the same time"
        for k in loaded:
            ended = k.events[-1]
            assert isinstance(ended, Escalated) and ended.details["scope"] == "tree"
    finally:
        for s in (setup, store_a, store_b):
            await s.close()
