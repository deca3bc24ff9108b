"""The commands that follow up on a thread (cli/follow_up.py: approve, respond, threads
event, resume, pause, cancel, fork, replay) as users run them: a real subprocess on a real
SQLite file, and with --server driving a real `threadline serve` over HTTP."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

from cli_support import CALC, cli, newest, remote_cli


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


def test_an_escalated_thread_names_how_to_go_on_and_a_message_moves_it_on(
    tmp_path: Path,
) -> None:
    """`run` ending escalated printed no next command (other statuses did). It names the
    two the runtime accepts for an escalated thread, `message` and `resume`; a message
    clears the escalation and the model reads it on its next call."""
    done = {"intent": "done_for_now", "arguments": {"message": "9/3 = 3"}}
    out = cli(tmp_path, "run", CALC, "?", answers=["no", "nope", "nah", done])
    tid = str(newest(tmp_path)["id"])
    assert out.returncode == 3 and f"thread {tid} is escalated" in out.stdout, out.stdout
    assert f"continue with: threadline message {tid} TEXT" in out.stdout, out.stdout
    assert f"threadline resume {tid}" in out.stdout, out.stdout
    out = cli(tmp_path, "message", tid, "Answer with done_for_now: 9/3 = 3")
    assert out.returncode == 0 and f"thread {tid} is done" in out.stdout, out.stdout + out.stderr
    events = json.loads(cli(tmp_path, "threads", "show", tid, "--json").stdout)["events"]
    [escalated] = [n for n, e in enumerate(events) if e["kind"] == "escalated"]
    message = events[escalated + 1]
    assert message["kind"] == "user_message" and message["channel"] == "cli"
    assert message["text"] == "Answer with done_for_now: 9/3 = 3"
    assert [e["kind"] for e in events[escalated + 2 :]] == ["model_call", "tool_call", "done"]
    again = cli(tmp_path, "respond", tid, "hi")  # a done thread asked nothing
    assert again.returncode == 1 and "asked nothing" in again.stderr


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


def _listed(help_text: str) -> list[str]:
    """The command names of a `--help` screen's Commands box, in the order shown."""
    box = help_text.split("Commands")[1]
    rows = [line for line in box.splitlines()[1:] if line.startswith("│ ")]
    return [row.split()[1] for row in rows if row[2] != " "]  # not a folded description


def test_help_lists_the_commands_in_their_order(tmp_path: Path) -> None:
    """Follow-up commands register after core's (`cli._register`): `threadline --help`
    lists run, then what follows up on a thread, as before they had a module of their own."""
    top = _listed(cli(tmp_path, "--help").stdout)
    assert top[:13] == [
        "build",
        "render",
        "profile",
        "run",
        "approve",
        "respond",
        "message",
        "resume",
        "pause",
        "cancel",
        "raise-budget",
        "fork",
        "replay",
    ], top
    assert top[13:16] == ["mcp", "eval", "new"], top
    threads = _listed(cli(tmp_path, "threads", "--help").stdout)
    assert threads[:4] == ["list", "show", "event", "stuck"], threads
