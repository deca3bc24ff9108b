"""bootstrap.py: the agents a process serves and the runtime it assembles from settings
(a real SQLite store, a JSON event log file that never holds this process's secrets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from threadline import Agent, ConfigError, SQLiteStore, Status
from threadline.bootstrap import chosen_agents, load_agents, open_runtime
from threadline.cli.api import agent_of
from threadline.settings import Settings
from threadline.testing import ScriptedModel, intent

BOT = "from threadline import Agent\nagent = Agent({name!r})\n"


def _agent_file(folder: Path, file: str, name: str) -> str:
    (folder / file).write_text(BOT.format(name=name))
    return f"{folder / file}:agent"


def test_named_agents_else_the_project_agent_else_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = _agent_file(tmp_path, "named.py", "named")
    assert chosen_agents([named]) == {"named": (load_agents([named])["named"][0], named)}
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    with pytest.raises(ConfigError, match="no agents: pass --agent path.py:name"):
        chosen_agents(None)
    project = tmp_path / "project"
    project.mkdir()
    _agent_file(project, "agent.py", "made-by-threadline-new")
    monkeypatch.chdir(project)  # `agent.py:agent` of a `threadline new` project
    assert list(chosen_agents([])) == ["made-by-threadline-new"]


def test_two_different_agents_may_not_share_a_name(tmp_path: Path) -> None:
    first = _agent_file(tmp_path, "one.py", "twin")
    second = _agent_file(tmp_path, "two.py", "twin")
    with pytest.raises(ConfigError, match=r"two agents are named 'twin' \(.*one.py.*two.py"):
        load_agents([first, second])
    assert list(load_agents([first, first])) == ["twin"]  # the same agent twice is fine


async def test_the_runtime_logs_events_without_the_process_secrets(tmp_path: Path) -> None:
    secret = "whsec-very-secret-value-1234"
    settings = Settings(
        store=f"sqlite:///{tmp_path / 'rt.db'}",
        log=str(tmp_path / "logs" / "events.jsonl"),
        webhook_secret=SecretStr(secret),
        otel=False,
    )
    agent = Agent("boot")
    model = ScriptedModel([intent("done_for_now", message=f"the secret is {secret}")])
    runtime = open_runtime(settings, [agent], model=model)
    thread = await runtime.launch(agent, f"repeat {secret}")
    await runtime.store.close()
    lines = (tmp_path / "logs" / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == [e.kind for e in thread.events]
    assert secret not in "\n".join(lines)
    assert (tmp_path / "rt.db").exists()  # the configured store, not the default path


TREE = """
from threadline import Agent, tool
from threadline.testing import ScriptedModel, intent

@tool(side_effects=True, approval="always")
def post_entry(amount: int) -> str:
    '''Post an entry (needs approval).'''
    return f"posted {amount}"

ledger = Agent("ledger", tools=[post_entry], model=ScriptedModel([intent("post_entry", amount=5)]))
agent = Agent(
    "books", tools=[ledger.as_tool()], model=ScriptedModel([intent("ledger", task="post 5")])
)
"""


async def test_threads_record_the_reference_their_agent_was_loaded_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any entry point built on `open_runtime` (serve, mcp, worker, channels) records the
    agent's reference on each thread it starts, a sub-agent's child thread included (its
    root's reference), so the CLI finds the code later from any folder without --agent."""
    (tmp_path / "books.py").write_text(TREE)
    monkeypatch.chdir(tmp_path)
    settings = Settings(store=f"sqlite:///{tmp_path / 'rt.db'}", log="off", otel=False)
    runtime = open_runtime(settings, chosen_agents(["books.py:agent"]), with_model=False)
    parent = await runtime.launch("books", "book it")
    await runtime.store.close()
    absolute = f"{tmp_path / 'books.py'}:agent"
    assert parent.metadata["agent_ref"] == absolute
    (child,) = [e.thread_id for e in parent.events if e.kind == "child_started"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    async with SQLiteStore(tmp_path / "rt.db") as store:
        loaded = await store.load(child)
        assert loaded.status == Status.AWAITING_APPROVAL
        assert loaded.metadata["agent_ref"] == absolute
        assert agent_of(loaded).name == "ledger"  # found below the recorded root agent
        assert agent_of(await store.load(parent.id)).name == "books"

    plain = open_runtime(settings, [Agent("unreferenced")], with_model=False)
    made = await plain.launch("unreferenced", "hi", advance=False)
    await plain.store.close()
    assert "agent_ref" not in made.metadata  # nothing to record: no reference was given
    with pytest.raises(ConfigError, match="pass --agent path.py:name"):
        agent_of(made)
    # A caller's own reference is never recorded: the CLI would import the file it names
    # (`approve`, `replay`), whether or not the runtime has one of its own to record.
    (tmp_path / "evil.py").write_text("raise SystemExit('imported a caller-chosen file')\n")
    claimed = {"agent_ref": f"{tmp_path / 'evil.py'}:agent", "team": "a"}
    plain = open_runtime(settings, [Agent("unreferenced")], with_model=False)
    made = await plain.launch("unreferenced", "hi", advance=False, metadata=claimed)
    await plain.store.close()
    assert "agent_ref" not in made.metadata and made.metadata["team"] == "a"
    with pytest.raises(ConfigError, match="pass --agent path.py:name"):
        agent_of(made)
    referenced = open_runtime(settings, chosen_agents(["../books.py:agent"]), with_model=False)
    made = await referenced.launch("books", "hi", advance=False, metadata=claimed)
    await referenced.store.close()
    assert made.metadata["agent_ref"] == absolute
