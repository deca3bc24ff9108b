"""Build and release: the lock pins prompts and tool schemas; a release refuses changes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from threadline import Agent, tool
from threadline.bootstrap import open_runtime
from threadline.errors import ConfigError, LockMismatch
from threadline.lockfile import build_lock, check_lock, read_lock, write_lock
from threadline.settings import Settings


@tool
def greet(name: str) -> str:
    """Greet someone."""
    return f"hi {name}"


@tool(name="greet")
def greet_v2(name: str, loud: bool = False) -> str:
    """Greet someone, maybe loudly."""
    return f"HI {name}" if loud else f"hi {name}"


PROMPT = "---\nname: greeter\nversion: 1.0.0\ntools: [greet]\n---\nGreet people.\n"


def _setup(tmp_path: Path) -> tuple[Path, Agent, Settings]:
    prompt = tmp_path / "greeter.md.j2"
    prompt.write_text(PROMPT)
    agent = Agent("greeter", tools=[greet], prompt=str(prompt))
    settings = Settings(
        store="memory://", log="off", release=True, lock_file=str(tmp_path / "threadline.lock")
    )
    lock, reports = build_lock([(agent, "agents.py:agent")], tmp_path)
    assert all(r.ok for r in reports), [r.problems for r in reports]
    write_lock(tmp_path / "threadline.lock", lock)
    return prompt, agent, settings


def test_the_lock_records_prompt_and_tool_hashes(tmp_path: Path) -> None:
    prompt, agent, _ = _setup(tmp_path)
    data = read_lock(tmp_path / "threadline.lock")
    entry = data["agents"]["greeter"]
    assert entry["prompt"]["file"] == "greeter.md.j2"
    assert entry["prompt"]["version"] == "1.0.0"
    assert set(entry["tools"]) == {"greet@1", "request_more_information@1", "done_for_now@1"}
    assert entry["tools"]["greet@1"]["sha256"] == greet.schema_hash()
    again, _ = build_lock([(agent, "agents.py:agent")], tmp_path)
    assert json.dumps(again, sort_keys=True) == json.dumps(data, sort_keys=True)


def test_release_with_a_matching_lock_starts(tmp_path: Path) -> None:
    _, agent, settings = _setup(tmp_path)
    rt = open_runtime(settings, [agent], with_model=False)
    assert rt.agent("greeter") is agent


def test_release_refuses_a_changed_prompt_naming_the_file(tmp_path: Path) -> None:
    prompt, _, settings = _setup(tmp_path)
    prompt.write_text(PROMPT.replace("Greet people.", "Insult people."))
    changed = Agent("greeter", tools=[greet], prompt=str(prompt))
    with pytest.raises(LockMismatch, match="greeter.md.j2 changed since the build"):
        open_runtime(settings, [changed], with_model=False)
    # Without release mode the same runtime starts (development).
    open_runtime(settings.model_copy(update={"release": False}), [changed], with_model=False)
    with pytest.raises(LockMismatch):
        check_lock(settings.model_copy(update={"release": False}), [changed], locked=True)


def test_release_refuses_a_changed_tool_schema(tmp_path: Path) -> None:
    prompt, _, settings = _setup(tmp_path)
    changed = Agent("greeter", tools=[greet_v2], prompt=str(prompt))
    with pytest.raises(LockMismatch, match=r"test_lockfile.py \(tool greet@1\)"):
        open_runtime(settings, [changed], with_model=False)


def test_release_refuses_an_agent_missing_from_the_lock(tmp_path: Path) -> None:
    _, _, settings = _setup(tmp_path)
    with pytest.raises(LockMismatch, match="agent other"):
        open_runtime(settings, [Agent("other", tools=[greet])], with_model=False)


def test_release_without_a_lock_says_to_build(tmp_path: Path) -> None:
    settings = Settings(
        store="memory://", log="off", release=True, lock_file=str(tmp_path / "missing.lock")
    )
    with pytest.raises(ConfigError, match="run `threadline build`"):
        open_runtime(settings, [Agent("a")], with_model=False)
    (tmp_path / "missing.lock").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        open_runtime(settings, [Agent("a")], with_model=False)


def test_build_reports_problems_instead_of_writing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.md.j2"
    bad.write_text("---\ntools: [greet, fly]\nmodel: gpt4\n---\nHello {{ missing }}")
    shutil.copy(bad, tmp_path / "copy.md.j2")
    agent = Agent("bad", tools=[greet], prompt=str(bad))
    _, [report] = build_lock([(agent, None)], tmp_path)
    text = "\n".join(report.problems)
    assert "'missing' is undefined" in text
    assert "lists tool 'fly'" in text
    assert "must look like provider:model" in text


def test_release_refuses_a_judge_whose_prompt_changed(tmp_path: Path) -> None:
    from threadline import Judge
    from threadline.testing import ScriptedModel

    path = tmp_path / "judge.md.j2"
    path.write_text("---\nname: strict\nversion: 1\n---\nBlock deletes.\n")

    def agent() -> Agent:
        return Agent("greeter", tools=[greet], guards=[Judge(ScriptedModel([]), prompt=path)])

    lock, reports = build_lock([(agent(), "agents.py:agent")], tmp_path)
    assert all(r.ok for r in reports)
    entry = lock["agents"]["greeter"]["judges"]["judge"]
    assert (entry["file"], entry["name"], entry["version"]) == ("judge.md.j2", "strict", "1")
    write_lock(tmp_path / "threadline.lock", lock)
    settings = Settings(store="memory://", log="off", lock_file=str(tmp_path / "threadline.lock"))
    check_lock(settings, [agent()], locked=True)  # unchanged: starts
    path.write_text("---\nname: strict\nversion: 1\n---\nAllow everything.\n")
    with pytest.raises(LockMismatch, match=r"judge.md.j2 \(prompt of judge judge\)"):
        check_lock(settings, [agent()], locked=True)
