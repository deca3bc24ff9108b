"""Rate limits on real material: recorded tau-bench airline conversations (GPT-4o, nobody
here wrote them) run at once on one SQLite store, under a model limit and a limit on the
tool they call most. Their model calls and tool runs, timed where they arrive, stay under
the limits in every window; the limits bind; and each conversation ends exactly as it
does with no limits: the same events apart from the waits, which the model never saw and
replay takes as inputs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from airline_support import airline_agent, recorded_answers, tau_runs
from ratelimit_agent import busiest
from threadline import Agent, MemoryStore, Rate, RateLimits, Runtime, SQLiteStore, Status, Thread
from threadline.events import Waiting, WaitTimedOut, utcnow
from threadline.models.base import Context, ModelOutput, ModelProfile
from threadline.replay import replay_thread
from threadline.testing import ScriptedModel

MODEL_LIMIT, TOOL_LIMIT, PER = 10, 3, 1.0
BUSY_TOOL = "get_reservation_details"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


class TimedModel:
    """A recorded conversation's answers, noting when each request arrives."""

    def __init__(self, answers: list[Any], arrivals: list[float]) -> None:
        self.inner = ScriptedModel(answers)
        self.arrivals = arrivals

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def profile(self) -> ModelProfile:
        return self.inner.profile

    async def request(self, context: Context) -> ModelOutput:
        self.arrivals.append(time.time())
        return await self.inner.request(context)


async def _converse(runtime: Runtime, agent: Agent, users: list[str], model: TimedModel) -> Thread:
    """Run one conversation to its end: approve each write, answer with the recorded user
    turns, and (when held back by a limit) wait until due, as a worker would."""
    thread = await runtime.launch(agent, users.pop(0))
    for _ in range(2000):
        state = thread.state
        if thread.status is Status.AWAITING_APPROVAL:
            call = next(c for c in state.pending.values() if c.approval == "requested")
            thread = await runtime.approve(thread.id, call.call_id)
        elif thread.status is Status.AWAITING_HUMAN and users and model.inner.remaining:
            assert state.human_request is not None
            thread = await runtime.respond(thread.id, state.human_request, users.pop(0))
        elif thread.status is Status.WAITING and state.waiting_until is not None:
            await asyncio.sleep(max(0.0, (state.waiting_until - utcnow()).total_seconds()))
            thread = await runtime.wake_if_due(thread)
        else:
            return thread
        thread = await runtime.advance(thread.id)
    raise AssertionError(f"{thread.id} did not end")


async def _run_all(
    runs: list[dict[str, Any]], runtime: Runtime, model_times: list[float], tools: list[float]
) -> list[tuple[Agent, Thread]]:
    def on_call(name: str) -> None:
        if name == BUSY_TOOL:
            tools.append(time.time())

    async def one(n: int, run: dict[str, Any]) -> tuple[Agent, Thread]:
        answers, users, results = recorded_answers(run["traj"])
        model = TimedModel(answers, model_times)
        # A conversation whose recording ends mid-task runs out of answers: it escalates
        # after three model errors instead of a thousand.
        agent = airline_agent(
            results, name=f"airline-{n}", on_call=on_call, model=model, max_consecutive_errors=3
        )
        return agent, await _converse(runtime, agent, users, model)

    return await asyncio.gather(*(one(n, run) for n, run in enumerate(runs)))


def _without_waits(thread: Thread) -> list[tuple[str, Any]]:
    return [
        (e.kind, getattr(e, "result", None) or getattr(e, "tool", None))
        for e in thread.events
        if not isinstance(e, Waiting | WaitTimedOut)
    ]


async def test_recorded_airline_conversations_stay_under_shared_limits(tmp_path: Path) -> None:
    runs = tau_runs()[::10]  # 20 conversations, every task type
    free_times: list[float] = []
    free = await _run_all(runs, Runtime(MemoryStore()), free_times, [])

    limits = RateLimits(
        models={"scripted": Rate(MODEL_LIMIT, PER)}, tools={BUSY_TOOL: Rate(TOOL_LIMIT, PER)}
    )
    model_times: list[float] = []
    tool_times: list[float] = []
    async with SQLiteStore(tmp_path / "threads.db") as store:
        limited = await _run_all(runs, Runtime(store, rate_limits=limits), model_times, tool_times)

    assert len(model_times) == len(free_times) > 100
    assert busiest(model_times, PER) == MODEL_LIMIT  # bound, and never passed
    assert 0 < busiest(tool_times, PER) <= TOOL_LIMIT
    waits = [e for _, t in limited for e in t.events if isinstance(e, Waiting)]
    assert {w.rate_limit for w in waits} == {"model:scripted", f"tool:{BUSY_TOOL}"}
    for (_, alone), (agent, held) in zip(free, limited, strict=True):
        assert held.status == alone.status
        assert _without_waits(held) == _without_waits(alone)
        replay_thread(agent, held)
    span = max(model_times) - min(model_times)
    print(
        f"\n{len(runs)} airline conversations: {len(model_times)} model calls in {span:.1f}s "
        f"(limit {MODEL_LIMIT}/{PER:g}s, {len(model_times) / span:.1f}/s), {len(tool_times)} "
        f"{BUSY_TOOL} runs (limit {TOOL_LIMIT}/{PER:g}s), {len(waits)} waits"
    )
