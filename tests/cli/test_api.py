"""cli/api.py: the one interface CLI commands use, and its local (Runtime) implementation.

The HTTP side (`Client`) is exercised against a live server in tests/test_client.py and by
the --server command tests in test_core.py; here, that both sides offer the same methods,
and that `LocalThreads` launches, acts, settles and takes over crashed leases for real on
SQLite with the calculator example and a scripted model.
"""

from __future__ import annotations

import inspect
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from threadline.cli.api import LocalThreads, ThreadsAPI, agent_of
from threadline.client import Client
from threadline.errors import ConfigError, InvalidAction
from threadline.events import Status, Thread, UserMessage, utcnow
from threadline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CALC = str(ROOT / "examples" / "calculator" / "agent.py") + ":agent"
DIVIDE = {"intent": "divide", "arguments": {"a": 9, "b": 3}}
DONE = {"intent": "done_for_now", "arguments": {"message": "3"}}


def _settings(tmp_path: Path, answers: list[object]) -> Settings:
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    return Settings(
        store=f"sqlite:///{tmp_path}/t.db", model=f"scripted:{tmp_path}/answers.json", log="off"
    )


def _methods(cls: type) -> list[str]:
    return [
        name
        for name, value in vars(cls).items()
        if inspect.iscoroutinefunction(value) and not name.startswith("_")
    ]


def test_both_implementations_take_every_parameter_of_the_interface() -> None:
    """`ThreadsAPI` is `LocalThreads | Client`: every method a command may call on the local
    side exists on the client with the same parameters (extras only with defaults)."""
    assert get_args(ThreadsAPI) == (LocalThreads, Client)
    methods = _methods(LocalThreads)
    assert {"launch", "load", "approve", "respond", "settle", "fork", "pause"} <= set(methods)
    for name in methods:
        wanted = inspect.signature(getattr(LocalThreads, name)).parameters
        have = inspect.signature(getattr(Client, name)).parameters
        for param in wanted.values():
            assert param.name in have, f"Client.{name} lacks {param.name}"
            assert have[param.name].kind == param.kind, (name, param.name)
            assert have[param.name].default == param.default, (name, param.name)
            if param.kind is param.VAR_KEYWORD:  # `**options: Unpack[...]`: the same keywords
                assert have[param.name].annotation == param.annotation, (name, param.name)
        extra = [p for p in have.values() if p.name not in wanted]
        assert all(p.default is not inspect.Parameter.empty for p in extra), (name, extra)


async def test_launch_by_reference_then_approve_and_settle(tmp_path: Path) -> None:
    notes: list[str] = []
    api = LocalThreads(_settings(tmp_path, [DIVIDE, DONE]), note=notes.append)
    async with api:
        launched = await api.launch(CALC, "9/3?", metadata={"channel": "cli"})
        assert launched.status == Status.RUNNING
        assert launched.metadata["agent_ref"] == CALC
        assert any("scripted model" in n for n in notes)
        thread = await api.settle(launched.id)
        assert thread.status == Status.AWAITING_APPROVAL
        call = next(iter(thread.state.pending))
        after = await api.approve(launched.id, call)
        assert after.status == Status.RUNNING  # approved, not yet advanced
        done = await api.settle(launched.id)
        assert done.status == Status.DONE
        approval = next(e for e in done.events if e.kind == "approval")
        assert approval.channel == "cli"  # type: ignore[union-attr]
        with pytest.raises(InvalidAction):
            await api.approve(launched.id, call)
        page = await api.list_threads(status="done")
        assert [item.id for item in page.items] == [launched.id]


async def test_a_later_process_finds_the_agent_from_the_recorded_reference(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, [DIVIDE, DONE])
    async with LocalThreads(settings) as first:
        thread_id = (await first.launch(CALC, "9/3?")).id
        await first.settle(thread_id)
    # The same answers file: the thread made one model call, so the later process's
    # scripted model answers with the second answer.
    async with LocalThreads(settings) as later:  # no agent references given
        call = next(iter((await later.load(thread_id)).state.pending))
        await later.approve(thread_id, call)
        assert (await later.settle(thread_id)).status == Status.DONE


async def test_an_unknown_agent_fails_before_anything_is_written(tmp_path: Path) -> None:
    settings = _settings(tmp_path, [])
    async with LocalThreads(settings) as api:
        thread = Thread("th_orphan", "nobody")
        thread.append(UserMessage(seq=0, at=utcnow(), text="hi"))
        await api.runtime.store.create(thread)
        with pytest.raises(ConfigError, match="pass --agent"):
            await api.respond("th_orphan", "r1", "hello")
        assert len(await api.load("th_orphan")) == 1
        with pytest.raises(ConfigError, match="pass --agent"):
            agent_of(thread)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def test_settle_takes_over_a_crashed_owner_but_not_a_live_one(tmp_path: Path) -> None:
    notes: list[str] = []
    settings = _settings(tmp_path, [DIVIDE, DIVIDE])
    host = socket.gethostname()
    async with LocalThreads(settings, [CALC], note=notes.append) as api:
        crashed = (await api.launch("calculator", "9/3?")).id
        held = (await api.launch("calculator", "9/3?")).id
        store = api.runtime.store
        dead = f"cli:{host}:{_dead_pid()}:aaaaaa"
        alive = f"cli:{host}:{os.getpid()}:bbbbbb"
        assert await store.lease(dead, ttl=300, thread_ids=[crashed])
        assert await store.lease(alive, ttl=300, thread_ids=[held])

        thread = await api.settle(crashed)
        assert thread.status == Status.AWAITING_APPROVAL
        assert notes[-1] == f"taking over from {dead}, which is no longer running"

        before = len(await api.load(held))
        thread = await api.settle(held)
        assert thread.status == Status.RUNNING and len(thread) == before
        assert notes[-1] == f"{alive} is advancing this thread; not advancing it here"


async def test_resume_of_a_parent_waiting_for_its_sub_agent_says_so(tmp_path: Path) -> None:
    """A coordinator waits (no `waiting` event: its call is a sub-agent's thread) while the
    billing sub-agent's refund awaits approval. `resume` on the coordinator said `coroutine
    raised StopIteration` (it looked for the wait's event); it names the sub-agent instead."""
    support = str(ROOT / "examples" / "multi_agent" / "agent.py") + ":agent"
    answers = [
        {"intent": "billing", "arguments": {"task": "Refund invoice INV-7 in full."}},
        {"intent": "find_invoice", "arguments": {"invoice": "INV-7"}},
        {"intent": "refund", "arguments": {"invoice": "INV-7", "amount": 40}},
    ]
    async with LocalThreads(_settings(tmp_path, answers), [support]) as api:
        root = await api.settle((await api.launch(support, "Refund INV-7.")).id)
        assert root.status == Status.WAITING
        (call,) = root.state.pending.values()
        assert call.child is not None
        assert (await api.get(call.child)).status == Status.AWAITING_APPROVAL
        with pytest.raises(InvalidAction, match=f"waiting for its sub-agent.*{call.child}"):
            await api.resume(root.id)
