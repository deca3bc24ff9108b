"""runtime_actions.py: each human action is checked against the thread's derived state and
written whole or not at all (a real SQLite store; the model is scripted)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cancel_support import STORES, Held, advance_held, land_before, store_url
from threadline import (
    Agent,
    InvalidAction,
    RetryableToolError,
    Runtime,
    SQLiteStore,
    Status,
    Worker,
    tool,
)
from threadline.events import Failed
from threadline.models.base import Context
from threadline.resilience import ToolRetry
from threadline.runtime_actions import Verdict
from threadline.stores import open_store
from threadline.testing import FunctionModel, ScriptedModel, intent


@tool(approval="always")
def transfer(amount: int, to: str) -> str:
    """Move money."""
    return f"sent {amount} to {to}"


BANK = Agent("bank", tools=[transfer])


def _two_transfers() -> ScriptedModel:
    """One answer asking for two transfers (two pending approvals), then the end."""
    both = [intent("transfer", amount=5, to="ana"), intent("transfer", amount=7, to="bo")]
    return ScriptedModel([both, intent("done_for_now", message="ok")])


async def _pending(tmp_path: Path) -> tuple[Runtime, str, list[str]]:
    rt = Runtime(SQLiteStore(tmp_path / "t.db"), agents=[BANK], model=_two_transfers())
    thread = await rt.launch(BANK, "pay both")
    assert thread.status is Status.AWAITING_APPROVAL
    return rt, thread.id, sorted(thread.state.pending)


async def test_verdicts_are_written_together_or_not_at_all(tmp_path: Path) -> None:
    rt, tid, (first, second) = await _pending(tmp_path)
    before = len(await rt.store.load(tid))
    for verdicts, why in [
        ([], "at least one verdict"),
        ([Verdict(first), Verdict(first, False)], "names a call twice"),
        ([Verdict(first), Verdict("c_nope")], "not awaiting approval"),
        ([Verdict(first), Verdict(second, edited_arguments={"amount": "lots"})], "amount"),
    ]:
        with pytest.raises(InvalidAction, match=why):
            await rt.approve_many(tid, verdicts, by="ana")
        assert len(await rt.store.load(tid)) == before  # not even the good verdict
    thread = await rt.approve_many(
        tid, [Verdict(first), Verdict(second, edited_arguments={"amount": 6, "to": "bo"})], by="x"
    )
    approvals = thread.events[before:]
    assert [a.kind for a in approvals] == ["approval", "approval"]
    assert approvals[1].edited_arguments == {"amount": 6, "to": "bo"}
    done = await rt.advance(tid)
    assert done.status is Status.DONE
    results = [e.result for e in done.events if e.kind == "tool_result"]
    assert sorted(results) == ["sent 5 to ana", "sent 6 to bo"]
    await rt.store.close()


async def test_an_expired_approval_is_a_rejection_nobody_wrote_and_happens_once(
    tmp_path: Path,
) -> None:
    rt, tid, (first, _) = await _pending(tmp_path)
    thread = await rt.expire_approval(tid, first, reason="nobody answered in 24h")
    expired = thread.events[-1]
    assert (expired.approved, expired.by, expired.channel) == (False, None, "expiry")
    assert expired.comment == "nobody answered in 24h"
    with pytest.raises(InvalidAction, match="was answered"):
        await rt.expire_approval(tid, first, reason="again")
    with pytest.raises(InvalidAction, match="not awaiting approval"):
        await rt.approve(tid, first, by="ana")
    await rt.store.close()


async def test_messages_pause_cancel_and_resume_check_the_state(tmp_path: Path) -> None:
    rt, tid, _ = await _pending(tmp_path)
    with pytest.raises(InvalidAction, match="messages are accepted when"):
        await rt.message(tid, "also pay carl")
    paused = await rt.pause(tid, by="ops", reason="audit")
    assert paused.status is Status.PAUSED
    with pytest.raises(InvalidAction, match="only an unfinished thread can be paused"):
        await rt.pause(tid)
    cancelled = await rt.cancel(tid, by="ops", reason="fraud")
    # A paused thread is unpaused first, so it shows as what it is: failed.
    assert [e.kind for e in cancelled.events[-2:]] == ["resumed", "failed"]
    assert cancelled.status is Status.FAILED
    assert cancelled.events[-1].reason == "cancelled by ops: fraud"
    with pytest.raises(InvalidAction, match="only an unfinished thread can be cancelled"):
        await rt.cancel(tid)
    resumed = await rt.resume(tid, by="ops")
    assert resumed.events[-1].kind == "resumed" and resumed.status is not Status.FAILED
    noted = await rt.external_event(tid, "audit.cleared", {"ticket": 7}, source="audit")
    assert noted.events[-1].payload == {"ticket": 7} and noted.events[-1].source == "audit"
    await rt.store.close()


async def test_a_fork_never_splits_one_append(tmp_path: Path) -> None:
    rt, tid, _ = await _pending(tmp_path)
    thread = await rt.store.load(tid)
    model_call = next(e.seq for e in thread.events if e.kind == "model_call")
    with pytest.raises(InvalidAction, match="written in one append"):
        await rt.fork(tid, at=model_call)
    with pytest.raises(InvalidAction, match="it has events"):
        await rt.fork(tid, at=len(thread))
    forked = await rt.fork(tid, at=model_call - 1)
    assert forked.id != tid and forked.metadata["forked_from"] == tid
    assert forked.events[-1].kind == "forked_from" and forked.events[-1].at_seq == model_call - 1
    assert len(await rt.store.load(tid)) == len(thread)  # the source is untouched
    await rt.store.close()


# -- a cancel stops every call that has not started (SQLite and PostgreSQL) --------------

SENT: list[int] = []


@tool(side_effects=True, approval="always")
def wire_money(amount: int) -> str:
    """Wire money (a side effect, after approval)."""
    SENT.append(amount)
    return f"wired {amount}"


WIRES = Agent("wires", tools=[wire_money])


@pytest.fixture(params=STORES)
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    SENT.clear()
    yield store_url(request.param, request, tmp_path)


def _wires() -> ScriptedModel:
    """Two wires in one answer; after a resume, the end."""
    both = [intent("wire_money", amount=5), intent("wire_money", amount=7)]
    return ScriptedModel([both, intent("done_for_now", message="stopped")])


async def test_a_cancel_withdraws_calls_awaiting_approval_and_approved_ones(url: str) -> None:
    """One call approved but not yet run, one awaiting its verdict, the thread paused: the
    cancel withdraws both, no worker runs them, and a resume asks the model again."""
    rt = Runtime(open_store(url), agents=[WIRES], model=_wires())
    thread = await rt.launch(WIRES, "wire 5 and 7")
    first, second = thread.state.pending
    await rt.approve(thread.id, first, by="ana")  # approved: it runs at the next advance
    await rt.pause(thread.id, by="ops")
    cancelled = await rt.cancel(thread.id, by="ops", reason="fraud")
    failed = cancelled.events[-1]
    assert isinstance(failed, Failed) and failed.withdrawn == (first, second)
    assert cancelled.status is Status.FAILED and cancelled.state.pending == {}
    stored = await rt.store.load(thread.id)
    assert stored.state.to_dict() == cancelled.state.to_dict()
    with pytest.raises(InvalidAction, match="not awaiting approval"):
        await rt.approve(thread.id, second, by="ana")
    stats = await Worker(rt, poll_interval=0.05).run(until_idle=True)
    assert stats.leased == 0
    resumed = await rt.resume(thread.id, by="ops")  # `threadline threads retry`
    assert resumed.status is Status.RUNNING
    done = await rt.advance(thread.id)
    assert done.status is Status.DONE and SENT == []
    assert not any(e.kind in ("tool_started", "tool_result") for e in done.events)
    await rt.store.close()


async def test_a_cancel_landing_between_choosing_a_call_and_starting_it(url: str) -> None:
    """The advancer chose the approved call; another process's cancel lands before its
    `tool_started`: the call is not started, the advance ends quietly, nothing runs later."""
    rt = Runtime(open_store(url), agents=[WIRES], model=_wires())
    other = Runtime(open_store(url), agents=[WIRES])
    thread = await rt.launch(WIRES, "wire 5 and 7")
    verdicts = [Verdict(call_id) for call_id in thread.state.pending]
    await rt.approve_many(thread.id, verdicts, by="ana")
    landed = land_before(rt.store, "tool_started", lambda: other.cancel(thread.id, by="ops"))
    advanced = await rt.advance(thread.id)
    assert landed and advanced.status is Status.FAILED and advanced.state.pending == {}
    assert [e.kind for e in advanced.events[-3:]] == ["approval", "approval", "failed"]
    await Worker(rt, poll_interval=0.05).run(until_idle=True)
    await rt.resume(thread.id, by="ops")
    done = await rt.advance(thread.id)
    assert done.status is Status.DONE and SENT == []
    await other.store.close()
    await rt.store.close()


def _slow_wires(held: Held) -> tuple[Agent, ScriptedModel]:
    """An agent whose wire (a side effect) runs until `held` is released, and a model that
    asks for one wire of 3, then ends."""

    @tool(side_effects=True)
    async def slow_wire(amount: int) -> str:
        """Wire money, slowly."""
        await held.hold()
        SENT.append(amount)
        return f"wired {amount}"

    model = ScriptedModel([intent("slow_wire", amount=3), intent("done_for_now", message="x")])
    return Agent("slow", tools=[slow_wire]), model


async def test_a_tool_running_when_the_cancel_lands_keeps_its_outcome(url: str) -> None:
    """A started call is not withdrawn (it may be running): its outcome is recorded after the
    cancel, so a side effect's result is never lost, and the thread stays failed."""
    held = Held()
    race = await advance_held(url, *_slow_wires(held), held)
    cancelled = await race.other.cancel(race.thread_id, by="ops")
    assert cancelled.events[-1].withdrawn == () and len(cancelled.state.pending) == 1
    held.release()
    advanced = await race.running
    assert [e.kind for e in advanced.events[-3:]] == ["tool_started", "failed", "tool_result"]
    assert advanced.status is Status.FAILED and advanced.state.pending == {}
    assert SENT == [3]
    await race.close()


async def test_a_cancel_ends_the_backoff_of_the_call_it_withdraws(url: str) -> None:
    """A call waiting out its retry's backoff is withdrawn, and its wait ends with it: a
    resume asks the model again at once, not after a backoff for a call that never runs."""
    tries: list[int] = []

    @tool(side_effects=True, retry=ToolRetry(base_delay=3600, max_delay=3600, sleep_limit=0))
    def flaky_wire(amount: int) -> str:
        """Wire money through a gateway that is busy."""
        tries.append(amount)
        raise RetryableToolError("gateway busy")

    agent = Agent("flaky", tools=[flaky_wire])
    model = ScriptedModel([intent("flaky_wire", amount=4), intent("done_for_now", message="x")])
    rt = Runtime(open_store(url), agents=[agent], model=model)
    thread = await rt.launch(agent, "wire 4")
    assert thread.status is Status.WAITING and tries == [4]  # an hour's backoff
    cancelled = await rt.cancel(thread.id, by="ops")
    assert cancelled.events[-1].withdrawn == tuple(thread.state.pending)
    assert not cancelled.state.waiting and cancelled.state.waiting_until is None
    stored = await rt.store.load(thread.id)
    assert stored.state.to_dict() == cancelled.state.to_dict()
    resumed = await rt.resume(thread.id, by="ops")
    assert resumed.status is Status.RUNNING
    done = await rt.advance(thread.id)
    assert done.status is Status.DONE and tries == [4]
    await rt.store.close()


@tool
def look_up(key: str) -> str:
    """Read a value (no side effects: a pipelined loop)."""
    return f"value of {key}"


@pytest.mark.parametrize("resumed", [False, True])
async def test_a_cancel_landing_in_a_pipelined_loop_stops_it_as_stored(
    url: str, resumed: bool
) -> None:
    """A read-only loop pipelines its appends; another process's cancel lands between two
    of them. The advance stops with the failed thread, event for event what the store
    holds (on PostgreSQL it ran on to `done`, every append after the cancel dropped).
    `resumed`: the thread is resumed too before the refused append comes back; the loop
    ends all the same, and does not go on with the resumed thread (it did: to `done`)."""
    agent = Agent("reader", tools=[look_up])
    answers = [intent("look_up", key=str(i)) for i in range(6)]
    model = ScriptedModel([*answers, intent("done_for_now", message="read")])
    rt = Runtime(open_store(url), agents=[agent], model=model)
    other = Runtime(open_store(url), agents=[agent])
    thread = await rt.launch(agent, "read six", advance=False)
    await rt.advance(thread.id, max_steps=2)  # the store knows the thread: appends pipeline

    async def cancel() -> None:
        await other.cancel(thread.id, by="ops")
        if resumed:
            await other.resume(thread.id, by="ops")

    landed = land_before(rt.store, "model_call", cancel)
    advanced = await rt.advance(thread.id)
    stored = await other.store.load(thread.id)
    assert landed and advanced.status is (Status.RUNNING if resumed else Status.FAILED)
    assert stored.events[-1].kind == ("resumed" if resumed else "failed")
    assert [e.model_dump() for e in advanced.events] == [e.model_dump() for e in stored.events]
    await other.store.close()
    await rt.store.close()


def _stale_reader(held: Held, where: str) -> tuple[Agent, FunctionModel]:
    """An agent whose first model call (`where="model"`), or the read-only tool its answer
    chose (`where="tool"`), is held by `held`; the model's next answer ends the thread."""

    @tool
    async def read_slowly(key: str) -> str:
        """Read a value, slowly (no side effects: its outcome is held with the answer)."""
        if where == "tool":
            await held.hold()
        return f"value of {key}"

    asked: list[Context] = []

    async def answer(context: Context) -> dict[str, object]:
        asked.append(context)
        if len(asked) > 1:
            return intent("done_for_now", message="decided after the resume")
        if where == "model":
            await held.hold()
        return intent("read_slowly", key="decided before the cancel")

    return Agent("reader", tools=[read_slowly]), FunctionModel(answer)


@pytest.mark.parametrize("where", ["model", "tool"])
async def test_a_decision_in_flight_across_a_cancel_and_a_resume_is_not_written(
    url: str, where: str
) -> None:
    """The advancer's model call (or the read-only tool its answer chose) is in flight when
    another process cancels the thread and resumes it. The answer, decided before the
    cancel, is not written after the resume: the advance ends, and the next one asks the
    model again from the log. (It was re-based over both and written as a new decision.)"""
    held = Held()
    race = await advance_held(url, *_stale_reader(held, where), held)
    await race.other.cancel(race.thread_id, by="ops")
    await race.other.resume(race.thread_id, by="ops")
    held.release()
    advanced = await race.running
    stored = await race.other.store.load(race.thread_id)
    assert [e.kind for e in stored.events[-2:]] == ["failed", "resumed"]
    assert advanced.status is Status.RUNNING and len(advanced) == len(stored)
    done = await race.rt.advance(race.thread_id)
    assert done.status is Status.DONE and done.events[-1].message == "decided after the resume"
    assert not any(getattr(e, "tool", None) == "read_slowly" for e in done.events)
    await race.close()


async def test_a_stale_answer_after_another_advancer_took_the_resumed_thread(url: str) -> None:
    """As above, and the process that resumed the thread advanced it to its end before the
    stale answer came back: the answer is dropped and its advance ends quietly with the
    thread as stored (it raised a conflict, as if two advancers raced unfenced)."""
    held = Held()
    fresh = ScriptedModel([intent("done_for_now", message="decided after the resume")])
    race = await advance_held(url, *_stale_reader(held, "model"), held, other_model=fresh)
    await race.other.cancel(race.thread_id, by="ops")
    await race.other.resume(race.thread_id, by="ops")
    assert (await race.other.advance(race.thread_id)).status is Status.DONE
    held.release()
    advanced = await race.running
    stored = await race.other.store.load(race.thread_id)
    assert [e.model_dump() for e in advanced.events] == [e.model_dump() for e in stored.events]
    assert [e.kind for e in stored.events].count("done") == 1
    assert stored.events[-1].message == "decided after the resume"
    await race.close()


async def test_a_tool_running_across_a_cancel_and_a_resume_keeps_its_outcome(url: str) -> None:
    """A started call runs on while the thread is cancelled, resumed and advanced by
    another process (which finds it 'maybe ran' and escalates): its outcome is still
    recorded when it comes, and its advance ends there. (The outcome was dropped with a
    conflict: the side effect happened and the log said 'maybe ran'.)"""
    held = Held()
    agent, model = _slow_wires(held)
    race = await advance_held(url, agent, model, held)
    await race.other.cancel(race.thread_id, by="ops")
    await race.other.resume(race.thread_id, by="ops")
    assert (await race.other.advance(race.thread_id)).status is Status.ESCALATED  # maybe ran
    held.release()
    advanced = await race.running
    stored = await race.other.store.load(race.thread_id)
    kinds = ["tool_started", "failed", "resumed", "escalated", "tool_result"]
    assert [e.kind for e in stored.events[-5:]] == kinds and SENT == [3]
    assert [e.model_dump() for e in advanced.events] == [e.model_dump() for e in stored.events]
    assert model.remaining == 1  # the advancer did not go on with the resumed thread
    await race.close()
