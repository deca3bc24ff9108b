"""The core commands (cli/core.py: run, threads list/show) as users run them: a real
subprocess, a real SQLite file, exit codes, one-line errors; and the same commands with
--server driving a real `threadline serve` over HTTP. The commands that follow up on a
thread are tested in test_follow_up.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cli_support import CALC, ROOT, cli, newest, remote_cli
from threadline.cli import follow_up, ops  # noqa: F401 (they add their commands)
from threadline.cli.common import app, threads_app
from threadline.cli.core import next_step
from threadline.events import Escalated, Status, utcnow


@pytest.mark.parametrize("status", list(Status))
def test_every_status_but_done_names_a_command_that_moves_it_on(status: Status) -> None:
    """`next_step` decides the hint `run`, `fork` and the follow-up commands print: one
    for every status (a new status fails to type-check there), each naming commands the
    CLI has."""
    hint = next_step("th_1", status)
    assert (hint == "") == (status == Status.DONE), hint
    names = {
        f"{group} {c.name or getattr(c.callback, '__name__', '')}".strip()
        for group, typer_app in (("", app), ("threads", threads_app))
        for c in typer_app.registered_commands
    }
    named = re.findall(r"threadline (threads \w+|\w+) th_1", hint)
    assert named or status == Status.DONE, hint
    assert set(named) <= names, (named, sorted(names))


def test_a_thread_its_budget_stopped_is_pointed_to_raise_budget_not_round_again(
    tmp_path: Path,
) -> None:
    """A message or resume escalates a thread its budget stopped again at its next call
    (docs/composition.md), so the escalation names neither: it names `raise-budget`, and
    where its figures are. Raised, the thread runs on to its new limit; a limit below the
    current one, a thread that is not under a budget, a finished one or an unknown id are
    refused with one line, nothing written. Another escalation names message and resume."""
    answers = [{"intent": "add", "arguments": {"a": i, "b": 1}} for i in range(8)]
    out = cli(tmp_path, "run", CALC, "add forever", "--budget-calls", "2", answers=answers)
    tid = str(newest(tmp_path)["id"])
    assert out.returncode == 3 and f"threadline raise-budget {tid}" in out.stdout, out.stdout
    assert f"threadline threads show {tid}" in out.stdout, out.stdout
    assert "threadline resume" not in out.stdout and "threadline message" not in out.stdout
    out = cli(tmp_path, "message", tid, "go on")  # as the hint says: escalated again
    assert out.returncode == 3 and f"threadline raise-budget {tid}" in out.stdout, out.stdout

    def events() -> list[dict]:
        return json.loads(cli(tmp_path, "threads", "show", tid, "--json").stdout)["events"]

    before = events()
    for args, error in [
        (["--budget-calls", "1"], "has used 2 model_calls; a limit of 1 is below that"),
        (["--budget-calls", "2"], "already has those limits"),
        (["--budget-usd", "1"], "has no usd limit to raise"),
        ([], "give a new limit"),
        (["--budget-calls", "-1"], "greater than or equal to 0"),
    ]:
        out = cli(tmp_path, "raise-budget", tid, *args)
        assert out.returncode != 0 and error in out.stderr, (args, out.stdout + out.stderr)
        assert "Traceback" not in out.stderr
    assert events() == before  # nothing written
    out = cli(tmp_path, "raise-budget", "th_nope", "--budget-calls", "4")
    assert out.returncode == 1 and "th_nope" in out.stderr, out.stderr

    out = cli(tmp_path, "raise-budget", tid, "--budget-calls", "4")
    assert out.returncode == 3 and f"threadline raise-budget {tid}" in out.stdout, out.stdout
    after = events()[len(before) :]
    assert after[0]["kind"] == "budget_raised" and after[0]["budget"]["max_model_calls"] == 4
    assert after[0]["by"] == "cli"
    assert [e["kind"] for e in after].count("model_call") == 2  # 2 more, to the new limit
    assert after[-1]["kind"] == "escalated" and after[-1]["details"]["scope"] == "thread"
    shown = cli(tmp_path, "threads", "show", tid).stdout
    assert "spent 4 calls" in shown, shown

    other = Escalated(seq=3, at=utcnow(), reason="3 consecutive errors")
    assert "threadline message th_1" in next_step("th_1", Status.ESCALATED, other)
    for answer, budget, error in [  # 3 invalid answers escalate; a division awaits approval
        ({"intent": "done_for_now", "arguments": {}}, "9", "escalated, not by its own budget"),
        ({"intent": "divide", "arguments": {"a": 9, "b": 3}}, "", "runs under no budget of"),
        ({"intent": "done_for_now", "arguments": {"message": "2"}}, "9", "is done; its budget"),
    ]:
        limit = ["--budget-calls", budget] if budget else []
        cli(tmp_path, "run", CALC, "1+1", *limit, answers=[answer])
        other_id = str(newest(tmp_path)["id"])
        out = cli(tmp_path, "raise-budget", other_id, "--budget-calls", "10")
        assert out.returncode == 1 and error in out.stderr, out.stderr


def test_a_thread_run_with_a_relative_agent_path_is_found_from_another_folder(
    tmp_path: Path,
) -> None:
    """`run calc/agent.py:agent` recorded that path as the thread's agent, so `approve`
    from another folder could not find the agent. The thread records it absolute; a thread
    recorded before that (a relative path) still resolves from the folder it was run in."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    shutil.copytree(ROOT / "examples" / "calculator", project / "calc")
    elsewhere.mkdir()
    divide = {"intent": "divide", "arguments": {"a": 9, "b": 3}}
    done = {"intent": "done_for_now", "arguments": {"message": "3"}}
    out = cli(tmp_path, "run", "calc/agent.py:agent", "9/3", answers=[divide, done], cwd=project)
    assert out.returncode == 0 and "awaiting_approval" in out.stdout, out.stdout + out.stderr
    tid = str(newest(tmp_path)["id"])
    out = cli(tmp_path, "approve", tid, cwd=elsewhere)
    assert out.returncode == 0 and f"thread {tid} is done" in out.stdout, out.stdout + out.stderr
    shown = json.loads(cli(tmp_path, "threads", "show", tid, "--json").stdout)
    assert shown["metadata"]["agent_ref"] == f"{(project / 'calc' / 'agent.py').resolve()}:agent"
    assert cli(tmp_path, "replay", tid, cwd=elsewhere).returncode == 0
    with sqlite3.connect(tmp_path / "t.db") as db:  # as an older version recorded it
        (metadata,) = db.execute("SELECT metadata FROM threads WHERE id = ?", (tid,)).fetchone()
        old = {**json.loads(metadata), "agent_ref": "calc/agent.py:agent"}
        db.execute("UPDATE threads SET metadata = ? WHERE id = ?", (json.dumps(old), tid))
    out = cli(tmp_path, "replay", tid, cwd=project)
    assert out.returncode == 0 and "no divergence" in out.stdout, out.stdout + out.stderr
    out = cli(tmp_path, "replay", tid, cwd=elsewhere)
    assert out.returncode == 1 and "agent file 'calc/agent.py' does not exist" in out.stderr


def test_run_pauses_without_a_terminal_then_approve_finishes(tmp_path: Path) -> None:
    answers = [
        {"intent": "divide", "arguments": {"a": 9, "b": 3}},
        {"intent": "done_for_now", "arguments": {"message": "3"}},
    ]
    out = cli(tmp_path, "run", CALC, "9/3", answers=answers)
    assert out.returncode == 0, out.stderr
    assert "awaiting_approval" in out.stdout and "scripted model" in out.stderr
    row = newest(tmp_path)
    assert row["status"] == "awaiting_approval" and row["id"] in out.stdout
    # The same file in a second process: the thread made one model call, so the scripted
    # model answers with answer 1 (not answer 0 again).
    out = cli(tmp_path, "approve", str(row["id"]))
    assert out.returncode == 0, out.stderr
    assert "tool_result" in out.stdout and "done" in out.stdout
    assert newest(tmp_path)["status"] == "done"
    shown = cli(tmp_path, "threads", "show", str(row["id"]), "--json")
    kinds = [e["kind"] for e in json.loads(shown.stdout)["events"]]
    assert kinds[-3:] == ["model_call", "tool_call", "done"]
    assert cli(tmp_path, "replay", str(row["id"])).returncode == 0


def test_interactive_rejection_with_feedback(tmp_path: Path) -> None:
    answers = [
        {"intent": "divide", "arguments": {"a": 1, "b": 0}},
        {"intent": "done_for_now", "arguments": {"message": "cannot divide by 0"}},
    ]
    out = cli(
        tmp_path,
        "run",
        CALC,
        "1/0",
        "--interactive",
        answers=answers,
        stdin="n\nzero is not allowed\n",
    )
    assert out.returncode == 0, out.stderr
    thread = json.loads(
        cli(tmp_path, "threads", "show", str(newest(tmp_path)["id"]), "--json").stdout
    )
    approval = next(e for e in thread["events"] if e["kind"] == "approval")
    assert approval["approved"] is False and approval["comment"] == "zero is not allowed"
    assert thread["events"][-1]["kind"] == "done"


@pytest.mark.parametrize("args", [("threads", "list", "--json"), ("threads", "list")])
def test_output_to_a_reader_that_stopped_reading_is_no_error(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """`threadline threads list --json | head -1` printed 'error: BrokenPipeError: [Errno
    32] Broken pipe' (the JSON lines go through typer.echo; rich's tables already ended
    quietly). The reader's end is closed here before the command writes anything, so every
    write fails: it ends with 1, as rich does, and prints nothing."""
    answers = [{"intent": "divide", "arguments": {"a": 9, "b": 3}}]
    assert cli(tmp_path, "run", CALC, "9/3", answers=answers).returncode == 0
    env = {**os.environ, "THREADLINE_STORE": f"sqlite:///{tmp_path}/t.db", "THREADLINE_LOG": "off"}
    command = [sys.executable, "-m", "threadline", *args]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 1 and stderr == "", stderr


def test_threads_list_shows_whole_ids_in_an_80_column_terminal(tmp_path: Path) -> None:
    """The README's `threads list --status awaiting_approval` then `approve th_...`: the id
    is what a person copies, so the table never cuts it short, nor any other column (they
    fold onto more lines)."""
    answers = [{"intent": "divide", "arguments": {"a": 9, "b": 3}}]
    assert cli(tmp_path, "run", CALC, "9/3", answers=answers).returncode == 0
    tid = str(newest(tmp_path)["id"])
    for columns in (80, 60):
        out = cli(tmp_path, "threads", "list", "--status", "awaiting_approval", columns=columns)
        assert out.returncode == 0 and tid in out.stdout and "…" not in out.stdout, out.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("threads", "show", "th_nope"),
        ("approve", "th_nope"),
        ("respond", "th_nope", "hi"),
        ("resume", "th_nope"),
        ("fork", "th_nope", "--at", "1"),
        ("replay", "th_nope"),
        ("run", "examples/none.py:agent", "hi"),
        ("run", "no-colon", "hi"),
        ("run", "json:dumps", "hi"),
        ("threads", "list", "--status", "sleeping"),
        ("approve", "th_x", "--edit", "{not json"),
    ],
)
def test_bad_arguments_and_unknown_ids_exit_non_zero_with_one_line(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    cli(tmp_path, "threads", "list")  # create the database
    out = cli(tmp_path, *args, answers=[])
    assert out.returncode != 0
    assert "Traceback" not in out.stderr + out.stdout
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    out = cli(tmp_path, "fork", "th_x", "--at", "notanumber")
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_locked_run_refuses_without_a_matching_lock(tmp_path: Path) -> None:
    import shutil

    example = tmp_path / "calc"
    shutil.copytree(ROOT / "examples" / "calculator", example)
    agent = f"{example}/agent.py:agent"
    answers = [{"intent": "done_for_now", "arguments": {"message": "ok"}}]
    out = cli(tmp_path, "run", "--locked", agent, "hi", answers=answers)
    assert out.returncode == 1 and out.stderr.startswith("error:") and "lock" in out.stderr
    assert cli(tmp_path, "build", "--agent", agent).returncode == 0
    out = cli(tmp_path, "run", "--locked", agent, "hi")
    assert out.returncode == 0, out.stderr
    prompt = next(example.glob("*.j2"))
    prompt.write_text(prompt.read_text() + "\nAlways answer in French.\n")
    out = cli(tmp_path, "run", "--locked", agent, "hi")
    assert out.returncode == 1 and prompt.name in out.stderr
    assert cli(tmp_path, "run", agent, "hi").returncode == 0  # not locked: runs anyway


# -- the same commands with --server ---------------------------------------------------


def test_run_approve_show_replay_over_http(server: tuple[str, dict[str, str]]) -> None:
    url, env = server
    out = remote_cli(env, "run", "--server", url, "calculator", "what is 9/3?")
    assert out.returncode == 0, out.stderr
    assert "approval_requested" in out.stdout and "awaiting_approval" in out.stdout

    listed = remote_cli(env, "threads", "list", "--server", url, "--json")
    row = json.loads(listed.stdout.splitlines()[0])
    assert row["status"] == "awaiting_approval"
    thread_id = row["id"]
    assert remote_cli(env, "threads", "list", "--json").stdout == ""  # nothing in the local store

    out = remote_cli(env, "approve", "--server", url, thread_id)
    assert out.returncode == 0, out.stderr
    assert "tool_result" in out.stdout and "is done" in out.stdout

    shown = json.loads(
        remote_cli(env, "threads", "show", "--server", url, thread_id, "--json").stdout
    )
    assert [e["kind"] for e in shown["events"]][-1] == "done"
    assert shown["events"][-1]["message"] == "9/3 = 3"

    again = remote_cli(env, "approve", "--server", url, thread_id)
    assert again.returncode == 1 and again.stderr.startswith("error:")
    assert "Traceback" not in again.stderr

    replayed = remote_cli(env, "replay", "--server", url, thread_id, "--agent", CALC)
    assert replayed.returncode == 0, replayed.stderr
    assert "no divergence" in replayed.stdout

    missing = remote_cli(env, "threads", "show", "--server", url, "th_missing")
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1


def test_threads_list_skips_and_reports_a_bad_row(tmp_path: Path) -> None:
    import asyncio
    import sqlite3

    from threadline.events import Thread, UserMessage, utcnow
    from threadline.stores import SQLiteStore

    async def make() -> None:
        async with SQLiteStore(tmp_path / "t.db") as store:
            for n in range(3):
                event = UserMessage(seq=0, at=utcnow(), text="hi")
                await store.create(Thread(f"th_cli{n}", "calc", [event]))

    asyncio.run(make())
    with sqlite3.connect(tmp_path / "t.db") as conn:
        conn.execute("UPDATE threads SET metadata = '{not json' WHERE id = 'th_cli1'")
    out = cli(tmp_path, "threads", "list", "--json")
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["id"] for line in out.stdout.splitlines()] == ["th_cli2", "th_cli0"]
    assert "skipped thread th_cli1" in out.stderr and "does not parse" in out.stderr


def test_threads_show_lists_a_guard_block_and_replay_reproduces_it(tmp_path: Path) -> None:
    agent = str(Path(__file__).resolve().parent / "guarded_agent.py") + ":agent"
    answers = [
        {"intent": "drop_table", "arguments": {"table": "orders"}},
        {"intent": "done_for_now", "arguments": {"message": "not dropped"}},
    ]
    out = cli(tmp_path, "run", agent, "drop the orders table", answers=answers)
    assert out.returncode == 0, out.stderr
    row = newest(tmp_path)
    assert row["status"] == "done"
    shown = cli(tmp_path, "threads", "show", str(row["id"]))
    assert shown.returncode == 0, shown.stderr
    (line,) = [x for x in shown.stdout.splitlines() if "guard_verdict" in x]
    # the reason's markup is printed as text, never interpreted
    assert "no_drops: block c2: [red]never[/red] drop tables here" in line
    assert cli(tmp_path, "replay", str(row["id"])).returncode == 0


def test_run_with_a_budget_escalates_and_show_prints_the_figures(tmp_path: Path) -> None:
    answers = [{"intent": "add", "arguments": {"a": i, "b": 1}} for i in range(5)]
    out = cli(tmp_path, "run", CALC, "add forever", "--budget-calls", "2", answers=answers)
    assert out.returncode == 3 and "escalated" in out.stdout, out.stderr
    tid = str(newest(tmp_path)["id"])
    shown = cli(tmp_path, "threads", "show", tid)
    assert "budget: spent 2 calls" in shown.stdout
    assert "thread budget exhausted" in shown.stdout
    assert "model_calls  2 + 0 + 1 > 2 <- exceeded" in shown.stdout
    # a negative limit is a usage error; USD over the scripted model (no price) is refused
    out = cli(tmp_path, "run", CALC, "x", "--budget-usd", "-1")
    assert out.returncode == 2 and "--budget-usd" in out.stderr
    out = cli(tmp_path, "run", CALC, "x", "--tree-budget-usd", "0.5")
    assert out.returncode == 1 and "needs the price of model scripted" in out.stderr
    assert "Traceback" not in out.stderr
