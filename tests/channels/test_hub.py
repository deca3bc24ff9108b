"""channels/hub.py: what a channel's inbound side acts through: a launch that answers in
its conversation, the conversation links, the kick, the checked order of an action, and the
refusal of actions on threads nothing here would advance (a real SQLite store)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from threadline import Agent, Runtime, SQLiteStore
from threadline.channels.hub import Hub
from threadline.errors import ConfigError, InvalidAction, ThreadNotFound
from threadline.events import Thread, UserMessage, utcnow
from threadline.testing import ScriptedModel

HELPDESK = Agent("helpdesk")


def _runtime(tmp_path: Path) -> Runtime:
    return Runtime(SQLiteStore(tmp_path / "hub.db"), agents=[HELPDESK], model=ScriptedModel([]))


async def test_a_launch_answers_in_its_conversation_and_links_it(tmp_path: Path) -> None:
    kicked: list[str] = []
    hub = Hub(_runtime(tmp_path), kick_thread=kicked.append, advances=True)
    conversation = {"channel": "C1", "thread_ts": "1700.1"}
    thread_id = await hub.launch(
        "helpdesk",
        "printer on fire",
        channel="slack",
        sender="U42",
        conversation=conversation,
        links=("C1:1700.1",),
    )
    thread = await hub.store.load(thread_id)
    assert thread.metadata["conversation"] == conversation
    assert thread.metadata["channel"] == "slack" and thread.events[0].sender == "U42"
    assert await hub.outbox.linked("slack", "C1:1700.1") == thread_id
    assert kicked == [thread_id]  # advanced in the background, not in the request
    with pytest.raises(ConfigError, match="unknown agent 'billing'"):
        await hub.launch("billing", "x", channel="slack", sender=None, conversation={})
    await hub.store.close()


async def test_actions_on_threads_nothing_here_advances_are_refused(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    other = Thread("th_other", "billing", [UserMessage(seq=0, at=utcnow(), text="hi")])
    await runtime.store.create(other)
    serving = Hub(runtime, advances=True)
    with pytest.raises(ConfigError, match="does not serve; act on it through"):
        await serving.check_served(other.id)
    with pytest.raises(ThreadNotFound):
        await serving.check_served("th_nope")
    await Hub(runtime, advances=False).check_served(other.id)  # workers advance it
    await runtime.store.close()


async def test_an_action_is_checked_then_written_then_kicked(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    kicked: list[str] = []
    hub = Hub(runtime, kick_thread=kicked.append, advances=True)
    mine = await runtime.launch("helpdesk", "hi", advance=False)
    other = Thread("th_other", "billing", [UserMessage(seq=0, at=utcnow(), text="hi")])
    await runtime.store.create(other)
    await runtime.pause(mine.id)
    resumed = await hub.act(mine.id, lambda: runtime.resume(mine.id, by="ann"))
    assert resumed.events[-1].kind == "resumed" and kicked == [mine.id]
    written: list[str] = []

    async def never() -> Thread:
        written.append("acted")
        return other

    with pytest.raises(ConfigError, match="does not serve"):
        await hub.act(other.id, never)
    assert written == [] and kicked == [mine.id]  # refused before acting, not kicked
    assert len((await runtime.store.load(other.id)).events) == 1
    with pytest.raises(InvalidAction):  # the action's refusal: nothing to kick
        await hub.act(mine.id, lambda: runtime.respond(mine.id, "q1", "x"))
    assert kicked == [mine.id]
    await runtime.store.close()


def test_a_retention_shorter_than_ten_minutes_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DELIVERY_RETENTION must be at least 0:10:00"):
        Hub(_runtime(tmp_path), retention=timedelta(seconds=30))
