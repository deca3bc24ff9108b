"""The core commands (cli/core.py) as users run them: a real subprocess, a real SQLite file,
exit codes, one-line errors; and the same commands with --server driving a real
`threadline serve` over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from server_support import serve_calculator

ROOT = Path(__file__).resolve().parents[2]
CALC = str(ROOT / "examples" / "calculator" / "agent.py") + ":agent"


def cli(
    tmp: Path,
    *args: str,
    answers: list[object] | None = None,
    stdin: str | None = None,
    columns: int = 200,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {
        **(env or os.environ),
        "THREADLINE_STORE": f"sqlite:///{tmp}/t.db",
        "THREADLINE_LOG": "off",
        "COLUMNS": str(columns),
    }
    if answers is not None:
        (tmp / "answers.json").write_text(json.dumps(answers))
    if (tmp / "answers.json").exists():
        env["THREADLINE_MODEL"] = f"scripted:{tmp}/answers.json"
    return subprocess.run(
        [sys.executable, "-m", "threadline", *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
    )


def newest(tmp: Path) -> dict[str, object]:
    out = cli(tmp, "threads", "list", "--json")
    return json.loads(out.stdout.splitlines()[0])


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


def test_approve_instead_sends_a_message_in_place_of_a_verdict(tmp_path: Path) -> None:
    answers = [
        {"intent": "divide", "arguments": {"a": 9, "b": 3}},
        {"intent": "done_for_now", "arguments": {"message": "Not dividing, then."}},
    ]
    out = cli(tmp_path, "run", CALC, "9/3", answers=answers)
    assert "--instead TEXT" in out.stdout, out.stdout + out.stderr
    thread_id = str(newest(tmp_path)["id"])
    both = cli(tmp_path, "approve", thread_id, "--instead", "no", "--reject")
    assert both.returncode != 0 and "--instead is a message" in both.stderr
    done = cli(tmp_path, "approve", thread_id, "--instead", "multiply instead")
    assert done.returncode == 0, done.stderr
    assert "responded_instead" in done.stdout and "Not dividing, then." in done.stdout
    shown = cli(tmp_path, "threads", "show", thread_id)
    assert "instead of a verdict" in shown.stdout or "multiply instead" in shown.stdout
    assert "tool_result" not in shown.stdout and "tool_started" not in shown.stdout


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


def test_question_then_respond(tmp_path: Path) -> None:
    out = cli(
        tmp_path,
        "run",
        CALC,
        "add 2 to something",
        answers=[
            {"intent": "request_more_information", "arguments": {"message": "to what?"}},
            {"intent": "done_for_now", "arguments": {"message": "7"}},
        ],
    )
    assert out.returncode == 0 and "awaiting_human" in out.stdout
    tid = str(newest(tmp_path)["id"])
    out = cli(tmp_path, "respond", tid, "five")  # answer 1 of the same file: not asked again
    assert out.returncode == 0, out.stderr
    assert newest(tmp_path)["status"] == "done"
    shown = json.loads(cli(tmp_path, "threads", "show", tid, "--json").stdout)
    assert [e["kind"] for e in shown["events"]].count("human_request") == 1


def test_escalation_exits_3_and_fork_resume(tmp_path: Path) -> None:
    out = cli(tmp_path, "run", CALC, "?", answers=["no", "nope", "nah"])
    assert out.returncode == 3 and "escalated" in out.stdout
    tid = str(newest(tmp_path)["id"])
    out = cli(tmp_path, "fork", tid, "--at", "0")
    assert out.returncode == 0 and "forked" in out.stdout
    forked = str(newest(tmp_path)["id"])
    assert forked != tid
    (tmp_path / "answers.json").write_text(
        json.dumps([{"intent": "done_for_now", "arguments": {"message": "ok"}}])
    )
    out = cli(tmp_path, "resume", forked)
    assert out.returncode == 0, out.stderr
    assert newest(tmp_path)["status"] == "done"


def test_a_provider_that_is_down_leaves_a_waiting_thread_the_cli_explains_and_resumes(
    tmp_path: Path,
) -> None:
    """`threadline run` against an OpenAI-compatible server that is not there: the breaker
    opens and the thread waits (docs/models.md). The CLI prints why and until when (the
    `waiting` line was blank), names the command that goes on, refuses `resume` before the
    time with that reason, and after it `resume` wakes the thread and runs it here."""
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = f"openai:m?server=generic&base_url=http://127.0.0.1:{port}/v1"
    env = {**os.environ, "THREADLINE_MODEL": down, "OPENAI_API_KEY": "x"}
    out = cli(tmp_path, "run", CALC, "9/3", env=env)
    tid = str(newest(tmp_path)["id"])
    assert out.returncode == 0 and newest(tmp_path)["status"] == "waiting", out.stdout
    assert "circuit breaker open" in out.stdout, out.stdout
    assert f"threadline resume {tid}" in out.stdout, out.stdout
    early = cli(tmp_path, "resume", tid, env=env)
    assert early.returncode == 1 and "is waiting until" in early.stderr, early.stderr
    assert "circuit breaker open" in early.stderr and "Traceback" not in early.stderr
    thread = json.loads(cli(tmp_path, "threads", "show", tid, "--json").stdout)
    until = datetime.fromisoformat(thread["events"][-1]["until"])
    time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 0.5)
    answers = [{"intent": "done_for_now", "arguments": {"message": "3"}}]
    late = cli(tmp_path, "resume", tid, answers=answers)
    assert late.returncode == 0 and "wait_timed_out" in late.stdout, late.stdout + late.stderr
    assert newest(tmp_path)["status"] == "done"


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


def test_fork_names_the_command_that_continues_the_new_thread(tmp_path: Path) -> None:
    """A fork of a thread at its approval request awaits that approval: `resume` refuses
    it ("nothing to resume"), so the fork's hint is `approve`, as `run`'s is."""
    answers = [{"intent": "divide", "arguments": {"a": 9, "b": 3}}]
    assert cli(tmp_path, "run", CALC, "9/3", answers=answers).returncode == 0
    tid = str(newest(tmp_path)["id"])
    out = cli(tmp_path, "fork", tid, "--at", "3")
    forked = str(newest(tmp_path)["id"])
    assert out.returncode == 0 and f"threadline approve {forked}" in out.stdout, out.stdout
    assert "resume" not in out.stdout
    out = cli(tmp_path, "fork", tid, "--at", "0")  # running: resume advances it
    assert f"threadline resume {newest(tmp_path)['id']}" in out.stdout, out.stdout
    assert cli(tmp_path, "cancel", tid).returncode == 4  # failed: resume refuses it
    out = cli(tmp_path, "fork", tid, "--at", "4")
    forked = str(newest(tmp_path)["id"])
    assert f"threadline threads retry {forked}" in out.stdout, out.stdout
    assert cli(tmp_path, "threads", "retry", forked).returncode == 0


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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    with serve_calculator(tmp_path) as served:
        yield served


def remote_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threadline", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


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


def test_pause_resume_and_fork_over_http(server: tuple[str, dict[str, str]]) -> None:
    url, env = server
    remote_cli(env, "run", "--server", url, "calculator", "what is 9/3?")
    thread_id = json.loads(
        remote_cli(env, "threads", "list", "--server", url, "--json").stdout.splitlines()[0]
    )["id"]
    out = remote_cli(env, "pause", "--server", url, thread_id)
    assert out.returncode == 0 and "paused" in out.stdout
    out = remote_cli(env, "resume", "--server", url, thread_id)
    assert out.returncode == 0 and "awaiting_approval" in out.stdout
    out = remote_cli(env, "fork", "--server", url, thread_id, "--at", "0")
    assert out.returncode == 0 and "forked" in out.stdout
    rows = [
        json.loads(line)
        for line in remote_cli(
            env, "threads", "list", "--server", url, "--json"
        ).stdout.splitlines()
    ]
    assert len(rows) == 2


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


PAYEE = """
from threadline import Agent
from threadline.waits import WAIT_TOOLS

agent = Agent(name="payee", tools=list(WAIT_TOOLS), instructions="Wait for the payment.")
"""


def test_threads_event_ends_a_wait_for_event(tmp_path: Path) -> None:
    (tmp_path / "payee.py").write_text(PAYEE)
    answers = [
        {"intent": "wait_for_event", "arguments": {"event": "payment", "timeout_seconds": 3600}},
        {"intent": "done_for_now", "arguments": {"message": "paid"}},
    ]
    out = cli(tmp_path, "run", f"{tmp_path / 'payee.py'}:agent", "wait", answers=answers)
    assert out.returncode == 0 and "waiting" in out.stdout, out.stderr
    tid = str(newest(tmp_path)["id"])
    for bad in ("[1]", '{"x": NaN}', "{not json"):
        out = cli(tmp_path, "threads", "event", tid, "payment", "--payload", bad)
        assert out.returncode == 1 and out.stderr.startswith("error: --payload"), out.stderr
    out = cli(tmp_path, "threads", "event", tid, "payment", "--payload", '{"amount": 5}')
    assert out.returncode == 0, out.stderr
    assert "external_event" in out.stdout and newest(tmp_path)["status"] == "done"
    shown = json.loads(cli(tmp_path, "threads", "show", tid, "--json").stdout)
    [event] = [e for e in shown["events"] if e["kind"] == "external_event"]
    assert event["payload"] == {"amount": 5} and event["source"] == "cli"


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
