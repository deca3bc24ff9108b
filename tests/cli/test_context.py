"""`threadline build / render / profile / prompts test` as users run them (subprocesses)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(
    tmp: Path, *args: str, answers: list[object] | None = None, **env_extra: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "THREADLINE_STORE": f"sqlite:///{tmp}/t.db",
        "THREADLINE_LOG": "off",
        "COLUMNS": "200",
        **env_extra,
    }
    if answers is not None:
        (tmp / "answers.json").write_text(json.dumps(answers))
        env["THREADLINE_MODEL"] = f"scripted:{tmp}/answers.json"
    return subprocess.run(
        [sys.executable, "-m", "threadline", *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _calculator(tmp: Path) -> str:
    shutil.copytree(ROOT / "examples" / "calculator", tmp / "calc")
    return "calc/agent.py:agent"


def _finished_thread(tmp: Path, ref: str) -> str:
    answers = [
        {"intent": "add", "arguments": {"a": 2, "b": 3}},
        {"intent": "done_for_now", "arguments": {"message": "5"}},
    ]
    out = cli(tmp, "run", ref, "what is 2 + 3?", answers=answers)
    assert out.returncode == 0, out.stderr
    listed = cli(tmp, "threads", "list", "--json")
    return json.loads(listed.stdout.splitlines()[0])["id"]


def test_build_writes_the_lock_and_release_refuses_a_changed_prompt(tmp_path: Path) -> None:
    ref = _calculator(tmp_path)
    out = cli(tmp_path, "build", "--agent", ref)
    assert out.returncode == 0, out.stderr
    lock = json.loads((tmp_path / "threadline.lock").read_text())
    assert lock["agents"]["calculator"]["prompt"]["file"] == "calc/prompt.md.j2"
    assert cli(tmp_path, "build", "--agent", ref, "--check").returncode == 0
    prompt = tmp_path / "calc" / "prompt.md.j2"
    prompt.write_text(prompt.read_text().replace("calculator.", "calculator!"))
    out = cli(tmp_path, "build", "--agent", ref, "--check")
    assert out.returncode == 1
    assert "calc/prompt.md.j2 changed since the build" in out.stderr
    answers = [{"intent": "done_for_now", "arguments": {"message": "x"}}]
    out = cli(tmp_path, "run", ref, "1+1", answers=answers, THREADLINE_RELEASE="1")
    assert out.returncode == 1
    assert "prompt.md.j2 changed since the build" in out.stderr
    assert "Traceback" not in out.stderr


def test_build_fails_on_a_broken_prompt(tmp_path: Path) -> None:
    ref = _calculator(tmp_path)
    (tmp_path / "calc" / "prompt.md.j2").write_text("---\nname: c\n---\nHi {{ nobody }}")
    out = cli(tmp_path, "build", "--agent", ref)
    assert out.returncode == 1
    assert "'nobody' is undefined" in out.stderr
    assert not (tmp_path / "threadline.lock").exists()


def test_render_prints_the_next_context_with_its_token_count(tmp_path: Path) -> None:
    ref = _calculator(tmp_path)
    thread_id = _finished_thread(tmp_path, ref)
    out = cli(tmp_path, "render", thread_id)
    assert out.returncode == 0, out.stderr
    assert "[system]\nYou are a calculator." in out.stdout
    assert "<add>\na: 2\nb: 3\n<add_result>" in out.stdout
    assert "input tokens" in out.stderr and "calculator@1.0.0" in out.stderr
    as_json = json.loads(
        cli(tmp_path, "render", thread_id, "--format", "messages", "--json").stdout
    )
    assert [m["role"] for m in as_json["messages"]][:4] == ["system", "user", "assistant", "tool"]
    assert as_json["input_tokens"] > 0
    assert as_json["prompt"]["name"] == "calculator"


def test_profile_prints_sections_and_writes_charts(tmp_path: Path) -> None:
    ref = _calculator(tmp_path)
    thread_id = _finished_thread(tmp_path, ref)
    out = cli(tmp_path, "profile", thread_id, "--html", "p.html", "--png", "p.png")
    assert out.returncode == 0, out.stderr
    for section in ("system", "history:tool_call", "history:user_message"):
        assert section in out.stdout
    assert "<table>" in (tmp_path / "p.html").read_text()
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_profile_totals_the_whole_request_as_render_counts_it(tmp_path: Path) -> None:
    """The profile's total is the request's count, framing of each message included: the
    number `render` prints, and the one the call's budget was checked against."""
    ref = _calculator(tmp_path)
    thread_id = _finished_thread(tmp_path, ref)
    answers: list[object] = []
    out = cli(tmp_path, "profile", thread_id, answers=answers)
    assert out.returncode == 0, out.stderr
    title = re.search(r"(\d+) input\s+tokens of a", out.stdout)
    assert title is not None, out.stdout
    rendered = json.loads(cli(tmp_path, "render", thread_id, "--json", answers=answers).stdout)
    assert int(title[1]) == rendered["input_tokens"]
    assert re.search(r"│ framing\s+│ \d+", out.stdout), out.stdout


def test_render_of_an_unknown_thread_is_one_clear_line(tmp_path: Path) -> None:
    out = cli(tmp_path, "render", "th_nope")
    assert out.returncode == 1
    assert "no thread with id 'th_nope'" in out.stderr and "Traceback" not in out.stderr


def test_prompts_test_runs_the_cases_next_to_the_prompt(tmp_path: Path) -> None:
    ref = _calculator(tmp_path)
    good = [
        {"intent": "add", "arguments": {"a": 3, "b": 4}},
        {"intent": "done_for_now", "arguments": {"message": "7"}},
        {"intent": "request_more_information", "arguments": {"message": "only maths"}},
    ]
    out = cli(tmp_path, "prompts", "test", "--agent", ref, answers=good)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3/3 passed" in out.stdout
    bad = [{"intent": "add", "arguments": {"a": 1, "b": 1}}] * 3
    out = cli(tmp_path, "prompts", "test", "--agent", ref, answers=bad)
    assert out.returncode == 1
    assert "0/3 passed" in out.stdout and "FAIL" in out.stdout
