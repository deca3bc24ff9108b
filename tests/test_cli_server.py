"""The core CLI commands with --server: the same commands drive a real `threadline serve`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
CALC = str(ROOT / "examples" / "calculator" / "agent.py")
THREADLINE = [sys.executable, "-m", "threadline"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    answers = [
        {"intent": "divide", "arguments": {"a": 9, "b": 3}},
        {"intent": "done_for_now", "arguments": {"message": "9/3 = 3"}},
    ]
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    env = {
        **os.environ,
        "THREADLINE_STORE": f"sqlite:///{tmp_path}/server.db",
        "THREADLINE_MODEL": f"scripted:{tmp_path}/answers.json",
        "THREADLINE_LOG": "off",
        "COLUMNS": "200",
    }
    port = _free_port()
    proc = subprocess.Popen(
        [*THREADLINE, "serve", "--agent", f"{CALC}:agent", "--port", str(port), "--no-auth"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "server died")
        time.sleep(0.1)
    # The CLI process gets its own (empty) local store: everything must go over HTTP.
    client_env = {**env, "THREADLINE_STORE": f"sqlite:///{tmp_path}/client-local.db"}
    yield url, client_env
    proc.terminate()
    proc.wait(20)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*THREADLINE, *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_run_approve_show_replay_over_http(server: tuple[str, dict[str, str]]) -> None:
    url, env = server
    out = cli(env, "run", "--server", url, "calculator", "what is 9/3?")
    assert out.returncode == 0, out.stderr
    assert "approval_requested" in out.stdout and "awaiting_approval" in out.stdout

    listed = cli(env, "threads", "list", "--server", url, "--json")
    row = json.loads(listed.stdout.splitlines()[0])
    assert row["status"] == "awaiting_approval"
    thread_id = row["id"]
    assert cli(env, "threads", "list", "--json").stdout == ""  # nothing in the local store

    out = cli(env, "approve", "--server", url, thread_id)
    assert out.returncode == 0, out.stderr
    assert "tool_result" in out.stdout and "is done" in out.stdout

    shown = json.loads(cli(env, "threads", "show", "--server", url, thread_id, "--json").stdout)
    assert [e["kind"] for e in shown["events"]][-1] == "done"
    assert shown["events"][-1]["message"] == "9/3 = 3"

    again = cli(env, "approve", "--server", url, thread_id)
    assert again.returncode == 1 and again.stderr.startswith("error:")
    assert "Traceback" not in again.stderr

    replayed = cli(env, "replay", "--server", url, thread_id, "--agent", f"{CALC}:agent")
    assert replayed.returncode == 0, replayed.stderr
    assert "no divergence" in replayed.stdout

    missing = cli(env, "threads", "show", "--server", url, "th_missing")
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1


def test_pause_resume_and_fork_over_http(server: tuple[str, dict[str, str]]) -> None:
    url, env = server
    cli(env, "run", "--server", url, "calculator", "what is 9/3?")
    thread_id = json.loads(
        cli(env, "threads", "list", "--server", url, "--json").stdout.splitlines()[0]
    )["id"]
    out = cli(env, "pause", "--server", url, thread_id)
    assert out.returncode == 0 and "paused" in out.stdout
    out = cli(env, "resume", "--server", url, thread_id)
    assert out.returncode == 0 and "awaiting_approval" in out.stdout
    out = cli(env, "fork", "--server", url, thread_id, "--at", "0")
    assert out.returncode == 0 and "forked" in out.stdout
    rows = [
        json.loads(line)
        for line in cli(env, "threads", "list", "--server", url, "--json").stdout.splitlines()
    ]
    assert len(rows) == 2
