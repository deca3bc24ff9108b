"""`threadline serve` as a real process: keys (`threadline keys`, tests/cli/test_api_keys.py),
auth, SIGTERM, resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from cli_support import assert_frozen_unless_told_not_to, stop_cleanly
from server_support import CALC, THREADLINE, free_port
from threadline.cli.serve import is_loopback, load_serve_config
from threadline.errors import ConfigError

AGENT = '''
import time
from threadline import Agent, tool

@tool(side_effects=True, idempotent=True)
def slow_step(n: int) -> str:
    """A step that takes a while."""
    time.sleep(1.5)
    return f"step {n} done"

agent = Agent(name="slowpoke", tools=[slow_step], instructions="Run the slow step, then finish.")
'''


def _env(tmp_path: Path, answers: list[dict]) -> dict[str, str]:
    path = tmp_path / f"answers-{len(list(tmp_path.glob('answers-*')))}.json"
    path.write_text(json.dumps(answers))
    return {
        **os.environ,
        "THREADLINE_STORE": f"sqlite:///{tmp_path / 'threads.db'}",
        "THREADLINE_MODEL": f"scripted:{path}",
        "THREADLINE_LOG": "off",
    }


def _cli(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [THREADLINE, *args], env=env, capture_output=True, text=True, timeout=60, cwd=cwd
    )


def _serve(
    env: dict[str, str], agent_ref: str, port: int, *extra: str, cwd: Path | None = None
) -> subprocess.Popen:
    proc = subprocess.Popen(
        [THREADLINE, "serve", "--agent", agent_ref, "--port", str(port), *extra],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("serve did not become ready")


def _kinds(db: Path, thread_id: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT kind FROM events WHERE thread_id = ? ORDER BY seq", (thread_id,)
            )
        ]


@pytest.mark.slow
def test_keys_sigterm_finishes_the_step_and_a_restart_resumes(tmp_path: Path) -> None:
    agent_file = tmp_path / "slowpoke.py"
    agent_file.write_text(AGENT)
    ref = f"{agent_file}:agent"
    env = _env(
        tmp_path,
        [
            {"intent": "slow_step", "arguments": {"n": 1}},
            {"intent": "done_for_now", "arguments": {"message": "resumed"}},
        ],
    )

    created = _cli(env, "keys", "create", "--name", "ops", "--scope", "launch,read")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("tl_") and len(secret) > 40
    listed = _cli(env, "keys", "list")
    assert "ops" in listed.stdout and secret not in listed.stdout
    with sqlite3.connect(tmp_path / "threads.db") as conn:
        [(stored,)] = conn.execute("SELECT secret_hash FROM api_keys").fetchall()
    assert secret not in stored and len(stored) == 64

    port = free_port()
    proc = _serve(env, ref, port)
    try:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/v1/threads").status_code == 401
        r = httpx.post(
            f"{base}/v1/threads",
            json={"agent": "slowpoke", "message": "go"},
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert r.status_code == 201, r.text
        thread_id = r.json()["id"]
        deadline = time.monotonic() + 20
        while "tool_started" not in _kinds(tmp_path / "threads.db", thread_id):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # mid-tool: the step must finish and checkpoint
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    kinds = _kinds(tmp_path / "threads.db", thread_id)
    assert kinds[-2:] == ["tool_started", "tool_result"], kinds  # finished, then stopped
    assert "done" not in kinds

    # A new process resumes the thread left running; the same answers file gives it the
    # answer after the thread's one model call (the finish), not the first again.
    proc = _serve(env, ref, port)
    try:
        deadline = time.monotonic() + 20
        while "done" not in _kinds(tmp_path / "threads.db", thread_id):
            assert time.monotonic() < deadline, _kinds(tmp_path / "threads.db", thread_id)
            time.sleep(0.05)
        revoke_id = _cli(env, "keys", "list").stdout.split("key_", 1)[1].split()[0]
        assert _cli(env, "keys", "revoke", "key_" + revoke_id).returncode == 0
        r = httpx.get(
            f"http://127.0.0.1:{port}/v1/threads/{thread_id}",
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert r.status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert _kinds(tmp_path / "threads.db", thread_id).count("tool_result") == 1


def test_sigterm_with_a_stream_open_ends_the_stream_and_exits_at_once(tmp_path: Path) -> None:
    """A browser following a thread does not hold the shutdown: its stream ends cleanly
    and the process exits 0, well before `--drain-timeout`."""
    env = _env(tmp_path, [{"intent": "divide", "arguments": {"a": 9, "b": 3}}])
    proc = _serve(env, str(CALC) + ":agent", port := free_port(), "--no-auth")
    try:
        base = f"http://127.0.0.1:{port}"
        body = {"agent": "calculator", "message": "9 / 3", "wait": True}
        thread = httpx.post(f"{base}/v1/threads", json=body, timeout=60).json()
        assert thread["status"] == "awaiting_approval", thread
        url = f"{base}/v1/threads/{thread['id']}/events/stream"
        with httpx.stream("GET", url, timeout=60) as stream:
            lines = stream.iter_lines()
            seen = []
            for line in lines:  # up to the thread's last event: the stream then only waits
                seen.append(line)
                if line == "event: approval_requested":
                    break
            assert seen[0] == ": connected"
            proc.send_signal(signal.SIGTERM)
            rest = list(lines)  # ends cleanly (an abrupt close raises here)
        assert rest[0].startswith("data: ") and not any(x.startswith("event:") for x in rest)
        assert proc.wait(timeout=15) == 0  # a bound on a wait: the drain timeout is 30 s
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_thread_launched_over_http_records_its_agent_for_the_cli(tmp_path: Path) -> None:
    """A thread started through `serve` records the reference the server loaded its agent
    from, made absolute, as a CLI launch does: `approve` and `replay` find the agent's code
    from another folder without --agent. A caller's `agent_ref` does not replace it (the
    CLI imports the file a reference names)."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    shutil.copytree(Path(CALC).parent, project / "calc")
    elsewhere.mkdir()
    divide = {"intent": "divide", "arguments": {"a": 9, "b": 3}}
    env = _env(tmp_path, [divide, {"intent": "done_for_now", "arguments": {"message": "3"}}])
    port = free_port()
    proc = _serve(env, "calc/agent.py:agent", port, "--no-auth", cwd=project)
    try:
        claimed = {"agent_ref": str(tmp_path / "not_the_agent.py") + ":agent"}
        body = {"agent": "calculator", "message": "9 / 3", "wait": True, "metadata": claimed}
        r = httpx.post(f"http://127.0.0.1:{port}/v1/threads", json=body, timeout=60)
        assert r.status_code == 201 and r.json()["status"] == "awaiting_approval", r.text
        thread = r.json()
    finally:
        stop_cleanly(proc)
    assert thread["metadata"]["agent_ref"] == f"{(project / 'calc' / 'agent.py').resolve()}:agent"
    out = _cli(env, "approve", thread["id"], cwd=elsewhere)
    assert out.returncode == 0 and f"thread {thread['id']} is done" in out.stdout, out.stderr
    out = _cli(env, "replay", thread["id"], cwd=elsewhere)
    assert out.returncode == 0 and "no divergence" in out.stdout, out.stderr


def test_no_auth_is_refused_off_loopback(tmp_path: Path) -> None:
    env = _env(tmp_path, [])
    r = _cli(env, "serve", "--host", "0.0.0.0", "--no-auth", "--agent", "x.py:agent")
    assert r.returncode == 1
    assert "--no-auth is refused" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_serve_config_file(tmp_path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("agents:\n  - a.py:agent\nport: 9000\n")
    assert load_serve_config(good) == {"agents": ["a.py:agent"], "port": 9000}
    for text, message in [
        ("agents: a.py:agent\n", "must be a list"),
        ("agent: [x]\n", "unknown keys agent"),
        ("- 1\n", "must be a mapping"),
        ("agents: [\n", "cannot read"),
    ]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_serve_config(bad)


def _serving_line(env: dict[str, str]) -> str:
    """Serve the calculator until it is ready, stop it with SIGTERM; the line it said what
    it serves with."""
    _, err = stop_cleanly(_serve(env, str(CALC) + ":agent", free_port(), "--no-auth"))
    (line,) = [x for x in err.splitlines() if x.startswith("threadline serving")]
    return line


def test_serve_freezes_its_start_up_objects_unless_told_not_to(tmp_path: Path) -> None:
    """Once the app and agents are loaded, the server freezes what start-up made
    (threadline.settle_heap): a full collection no longer walks it on the event loop, so
    it stalls no request and no thread. THREADLINE_GC_FREEZE=0 turns that off."""
    env = _env(tmp_path, [])
    line = _serving_line(env)
    off = _serving_line({**env, "THREADLINE_GC_FREEZE": "0"})
    # the server's imports alone are tens of thousands of objects
    assert_frozen_unless_told_not_to(line, off, at_least=50_000)
