"""The dispatcher: notices recorded in the outbox of a real SQLite store, then sent on a
`MemoryChannel`; routing, decisions updating what was sent, idempotency, crash recovery,
retries, reminders and expiries (with a clock the test moves)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from threadline import Agent, Runtime, tool
from threadline.agent import ApprovalExpiry
from threadline.channels import Dispatcher, MemoryChannel
from threadline.errors import ConfigError
from threadline.events import Approval, Status
from threadline.models.base import Context
from threadline.stores import SQLiteStore, outbox
from threadline.testing import FunctionModel, intent

ORIGIN = {"channel": "memory", "conversation": {"room": "r1", "thread": "t1"}}


@tool(approval="always", side_effects=True)
def deploy(environment: str) -> str:
    """Deploy.

    Args:
        environment: where
    """
    return f"deployed to {environment}"


@dataclass
class Clock:
    now: datetime = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def move(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _agent(**kw: Any) -> Agent:
    return Agent(name="ops", tools=[deploy], instructions="deploy", **kw)


def _model() -> FunctionModel:
    def answer(context: Context) -> Any:
        text = "\n".join(m.content for m in context.messages)
        if "deployed to prod" in text:
            return intent("done_for_now", message="Deployed.")
        if "reject" in text.lower():
            return intent("done_for_now", message="Not deployed.")
        return intent("deploy", environment="prod")

    return FunctionModel(answer, model_id="ops-script")


async def _setup(
    tmp_path: Path, agent: Agent, channel: MemoryChannel, clock: Clock | None = None
) -> tuple[Runtime, Dispatcher]:
    clock = clock or Clock()
    dispatcher = Dispatcher({channel.name: channel}, clock=clock, backoff=10.0)
    runtime = Runtime(
        SQLiteStore(tmp_path / "t.db"),
        agents=[agent],
        model=_model(),
        observers=[dispatcher],
        clock=clock,
    )
    dispatcher.bind(runtime)
    return runtime, dispatcher


async def _launch(runtime: Runtime, dispatcher: Dispatcher, metadata: dict[str, Any]) -> str:
    thread = await runtime.launch("ops", "deploy prod please", channel="memory", metadata=metadata)
    await dispatcher.flush()
    assert thread.status == Status.AWAITING_APPROVAL
    return thread.id


async def test_a_thread_answers_where_it_came_from(tmp_path: Path) -> None:
    channel = MemoryChannel()
    runtime, dispatcher = await _setup(tmp_path, _agent(), channel)
    thread_id = await _launch(runtime, dispatcher, {"conversation": ORIGIN["conversation"]})
    [approval] = channel.sent
    assert approval.notice.kind == "approval" and approval.notice.tool == "deploy"
    assert approval.notice.arguments == {"environment": "prod"}
    assert approval.notice.text == "deploy prod please"  # the request, for context
    assert approval.to.conversation == ORIGIN["conversation"]
    call_id = approval.notice.call_id or ""
    await runtime.approve(thread_id, call_id, by="alice", channel="slack")
    await runtime.advance(thread_id)
    await dispatcher.flush()
    assert channel.kinds() == ["approval", "decided", "answer"]
    decided, answer = channel.sent[1], channel.sent[2]
    assert decided.notice.text == "approved by alice in Slack"
    assert decided.previous == {"n": 1}  # updates the approval message it sent
    assert answer.notice.text == "Deployed." and answer.to == approval.to
    await runtime.store.close()


async def test_routes_send_a_kind_elsewhere_and_decisions_update_every_copy(
    tmp_path: Path,
) -> None:
    channel = MemoryChannel()
    agent = _agent(routes={"approval": ["origin", "memory:#oncall"], "answer": "memory:#log"})
    runtime, dispatcher = await _setup(tmp_path, agent, channel)
    thread_id = await _launch(runtime, dispatcher, {"conversation": ORIGIN["conversation"]})
    assert [s.to.address for s in channel.sent] == ["", "#oncall"]
    # A reply in the routed conversation reaches the thread (the channel's link).
    assert await outbox(runtime.store).linked("memory", "#oncall:2") == thread_id
    call_id = channel.sent[0].notice.call_id or ""
    await runtime.approve(thread_id, call_id, approved=False, comment="not today", by="bob")
    await runtime.advance(thread_id)
    await dispatcher.flush()
    decided = [s for s in channel.sent if s.notice.kind == "decided"]
    assert sorted(s.to.address for s in decided) == ["", "#oncall"]
    assert {s.notice.text for s in decided} == {"rejected by bob in the API"}
    assert sorted(str(s.previous) for s in decided) == ["{'n': 1}", "{'n': 2, 'link': '#oncall:2'}"]
    await runtime.store.close()


async def test_threads_without_a_conversation_use_reply_to_or_send_nothing(
    tmp_path: Path,
) -> None:
    channel = MemoryChannel()
    runtime, dispatcher = await _setup(tmp_path, _agent(), channel)
    await _launch(runtime, dispatcher, {})  # from the API: the inbox is its channel
    assert channel.sent == []
    await _launch(runtime, dispatcher, {"reply_to": "memory:#reports"})  # a schedule's
    assert [(s.notice.kind, s.to.address) for s in channel.sent] == [("approval", "#reports")]
    await runtime.store.close()


async def test_an_unknown_route_kind_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown kinds"):
        _agent(routes={"approvals": "memory:#x"})


async def test_observing_twice_sends_once_and_a_crashed_send_is_resent_once(
    tmp_path: Path,
) -> None:
    channel = MemoryChannel()
    clock = Clock()
    runtime, dispatcher = await _setup(tmp_path, _agent(), channel, clock)
    thread_id = await _launch(runtime, dispatcher, {"conversation": ORIGIN["conversation"]})
    thread = await runtime.store.load(thread_id)
    await dispatcher(thread, thread.events)  # the same events observed again
    await dispatcher.flush()
    assert channel.kinds() == ["approval"]
    # A process records a notice, claims it and dies before marking it sent.
    box = outbox(runtime.store)
    [sent] = await box.about(thread_id, _topic(runtime))
    lost = replace(sent, id=sent.id + "-lost", status="pending", attempts=0, ref=None)
    assert await box.add([lost], at=clock()) == [lost.id]
    assert len(await box.claim(now=clock(), hold=dispatcher.hold, ids=[lost.id])) == 1
    assert await dispatcher.sweep() == 0  # still held by the dead process
    clock.move(61)
    assert await dispatcher.sweep() == 1
    assert await dispatcher.sweep() == 0
    assert channel.kinds() == ["approval", "approval"]
    await runtime.store.close()


async def test_a_failed_send_is_retried_later_then_given_up(tmp_path: Path) -> None:
    channel = MemoryChannel(fail=1)
    clock = Clock()
    runtime, dispatcher = await _setup(tmp_path, _agent(), channel, clock)
    thread_id = await _launch(runtime, dispatcher, {"conversation": ORIGIN["conversation"]})
    assert channel.sent == []
    [entry] = await outbox(runtime.store).about(thread_id, channel_topic := _topic(runtime))
    assert entry.status == "pending" and entry.error and entry.attempts == 1
    assert await dispatcher.sweep() == 0  # not before its retry time
    clock.move(11)
    assert await dispatcher.sweep() == 1
    assert channel.kinds() == ["approval"]
    [entry] = await outbox(runtime.store).about(thread_id, channel_topic)
    assert entry.status == "sent" and entry.ref == {"n": 1}
    channel.fail = 100
    dispatcher.max_attempts = 2
    await runtime.approve(thread_id, channel.sent[0].notice.call_id or "", by="alice")
    await dispatcher.flush()
    clock.move(3600)
    await dispatcher.sweep()
    statuses = [e.status for e in await outbox(runtime.store).about(thread_id, channel_topic)]
    assert statuses == ["sent", "failed"]
    await runtime.store.close()


def _topic(runtime: Runtime) -> str:
    return "approval:" + _only_call_id(runtime)


def _only_call_id(runtime: Runtime) -> str:
    store = runtime.store
    assert isinstance(store, SQLiteStore)
    import sqlite3

    with sqlite3.connect(store.path) as conn:
        (topic,) = conn.execute("SELECT topic FROM channel_outbox LIMIT 1").fetchone()
    return str(topic).split(":", 1)[1]


async def test_an_unanswered_approval_is_reminded_then_rejected(tmp_path: Path) -> None:
    channel = MemoryChannel()
    clock = Clock()
    expiry = ApprovalExpiry(timedelta(hours=1), reminders=(timedelta(minutes=10),))
    runtime, dispatcher = await _setup(tmp_path, _agent(approval_expiry=expiry), channel, clock)
    thread_id = await _launch(runtime, dispatcher, {"conversation": ORIGIN["conversation"]})
    clock.move(49 * 60)
    assert await dispatcher.sweep() == 0
    clock.move(60)
    assert await dispatcher.sweep() == 1
    assert channel.kinds() == ["approval", "reminder"]
    assert channel.sent[1].previous == {"n": 1}  # under the approval message
    clock.move(10 * 60)
    assert await dispatcher.sweep() == 1
    thread = await runtime.store.load(thread_id)
    verdict = thread.events[-1]
    assert isinstance(verdict, Approval) and not verdict.approved
    assert verdict.channel == "expiry" and "within 1:00:00" in (verdict.comment or "")
    await dispatcher.flush()
    assert channel.kinds() == ["approval", "reminder", "decided"]
    assert channel.sent[-1].notice.text == "rejected: nobody answered in time"
    await runtime.store.close()


async def test_an_answered_approval_is_not_reminded_nor_expired(tmp_path: Path) -> None:
    channel = MemoryChannel()
    clock = Clock()
    expiry = ApprovalExpiry(timedelta(hours=1), reminders=(timedelta(minutes=10),))
    runtime, dispatcher = await _setup(tmp_path, _agent(approval_expiry=expiry), channel, clock)
    thread_id = await _launch(runtime, dispatcher, {"conversation": ORIGIN["conversation"]})
    await runtime.approve(thread_id, channel.sent[0].notice.call_id or "", by="alice")
    await runtime.advance(thread_id)
    await dispatcher.flush()
    clock.move(2 * 3600)
    assert await dispatcher.sweep() == 2  # the reminder (skipped) and the expiry (no-op)
    assert channel.kinds() == ["approval", "decided", "answer"]
    thread = await runtime.store.load(thread_id)
    assert thread.status == Status.DONE
    assert [e.kind for e in thread.events].count("approval") == 1
    await runtime.store.close()


async def test_an_expiry_can_escalate_and_keep_the_approval_open(tmp_path: Path) -> None:
    channel = MemoryChannel()
    clock = Clock()
    expiry = ApprovalExpiry(timedelta(minutes=5), then="escalate")
    agent = _agent(approval_expiry={"deploy": expiry}, routes={"escalation": "memory:#oncall"})
    runtime, dispatcher = await _setup(tmp_path, agent, channel, clock)
    thread_id = await _launch(runtime, dispatcher, {"conversation": ORIGIN["conversation"]})
    clock.move(301)
    assert await dispatcher.sweep() == 1
    assert channel.kinds() == ["approval", "escalation"]
    assert channel.sent[1].to.address == "#oncall"
    assert "nobody answered the approval of deploy" in channel.sent[1].notice.text
    assert (await runtime.store.load(thread_id)).status == Status.AWAITING_APPROVAL
    await runtime.store.close()


async def test_catch_up_records_what_a_stopped_process_left_out(tmp_path: Path) -> None:
    channel = MemoryChannel()
    runtime, dispatcher = await _setup(tmp_path, _agent(), channel)
    runtime.observers.clear()  # the process that appended stopped before recording
    thread = await runtime.launch(
        "ops", "deploy", channel="memory", metadata={"conversation": {"room": "r"}}
    )
    assert thread.status == Status.AWAITING_APPROVAL and channel.sent == []
    assert await dispatcher.catch_up() == 1
    await dispatcher.flush()
    assert channel.kinds() == ["approval"]
    assert await dispatcher.catch_up() == 1  # looked again: nothing recorded twice
    await dispatcher.flush()
    assert channel.kinds() == ["approval"]
    await runtime.store.close()


async def test_catch_up_sends_a_recent_ending_once_but_not_a_stale_one(tmp_path: Path) -> None:
    channel = MemoryChannel()
    clock = Clock()
    runtime, dispatcher = await _setup(tmp_path, _agent(), channel, clock)
    runtime.observers.clear()  # the process that appended the answer stopped before recording
    conversation = {"conversation": {"room": "r"}}
    thread = await runtime.launch("ops", "deploy", channel="memory", metadata=conversation)
    await runtime.approve(thread.id, next(iter(thread.state.pending)), by="alice")
    assert (await runtime.advance(thread.id)).status == Status.DONE
    clock.now = datetime.now(UTC) + timedelta(days=2)  # the thread ended two days ago
    assert await dispatcher.catch_up() == 0
    assert channel.sent == []
    clock.now = datetime.now(UTC)
    assert await dispatcher.catch_up() == 1
    await dispatcher.flush()
    assert channel.kinds() == ["answer"]
    assert channel.sent[0].notice.text == "Deployed."
    assert await dispatcher.catch_up() == 1  # queued or sent: never recorded twice
    await dispatcher.flush()
    assert channel.kinds() == ["answer"]
    await runtime.store.close()


async def test_a_message_instead_of_a_verdict_updates_what_the_approval_sent(
    tmp_path: Path,
) -> None:
    channel = MemoryChannel()
    runtime, dispatcher = await _setup(tmp_path, _agent(), channel)
    thread_id = await _launch(runtime, dispatcher, {"conversation": ORIGIN["conversation"]})
    call_id = channel.sent[0].notice.call_id or ""
    await runtime.respond_instead(thread_id, call_id, "staging first", by="alice", channel="ui")
    await dispatcher.flush()
    assert channel.kinds() == ["approval", "decided"]
    decided = channel.sent[1]
    assert decided.notice.text == "answered with a message instead by alice in the inbox"
    assert (decided.notice.approved, decided.notice.comment) == (None, "staging first")
    assert decided.notice.tool == "deploy" and decided.previous == {"n": 1}
    await runtime.store.close()


async def test_catch_up_leaves_agents_served_elsewhere_to_their_processes(
    tmp_path: Path,
) -> None:
    channel = MemoryChannel()
    runtime, dispatcher = await _setup(tmp_path, _agent(), channel)
    other = Agent(name="oncall", tools=[deploy], instructions="deploy", routes={})
    elsewhere = Runtime(SQLiteStore(tmp_path / "t.db"), agents=[other], model=_model())
    thread = await elsewhere.launch(
        "oncall", "deploy", channel="memory", metadata={"conversation": {"room": "r"}}
    )
    assert thread.status == Status.AWAITING_APPROVAL
    # Only a process serving `oncall` knows where its approvals go (its routes).
    assert await dispatcher.catch_up() == 0
    await dispatcher.flush()
    assert channel.sent == []
    await elsewhere.store.close()
    await runtime.store.close()
