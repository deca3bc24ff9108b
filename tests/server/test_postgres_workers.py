"""Production shape: an API-only server and a separate worker process on PostgreSQL.

`threadline serve --no-worker` only appends events; `threadline worker` leases runnable
threads from the same database and advances them. A launch with `wait` sees the worker's
events; an approval made over HTTP is picked up by the worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from pg_support import pg_store_url
from server_support import THREADLINE, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

AGENT = '''
from threadline import Agent, tool

@tool(approval="always")
def gated_op(x: int) -> str:
    """An operation a human approves."""
    return f"op {x} ran"

agent = Agent(name="gated", tools=[gated_op], instructions="Run gated_op, then finish.")
'''


def test_api_only_server_with_a_postgres_worker(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    (tmp_path / "gated.py").write_text(AGENT)
    ref = f"{tmp_path / 'gated.py'}:agent"
    answers = tmp_path / "answers.json"
    answers.write_text(
        json.dumps(
            [
                {"intent": "gated_op", "arguments": {"x": 7}},
                {"intent": "done_for_now", "arguments": {"message": "ok"}},
            ]
        )
    )
    env = {
        **os.environ,
        "THREADLINE_STORE": pg_store_url(postgres_url, pg_schema),
        "THREADLINE_MODEL": f"scripted:{answers}",
        "THREADLINE_LOG": "off",
    }
    created = subprocess.run(
        [THREADLINE, "keys", "create", "--name", "ops", "--scope", "admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()

    port = free_port()
    server = subprocess.Popen(
        [THREADLINE, "serve", "--no-worker", "--agent", ref, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    worker = subprocess.Popen(
        [THREADLINE, "worker", "--agent", ref, "--poll", "0.2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as c:
            for _ in range(300):
                try:
                    if c.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                time.sleep(0.1)
            r = c.post(
                "/v1/threads",
                json={"agent": "gated", "message": "run it", "wait": True, "wait_timeout": 30},
            )
            assert r.status_code == 201, r.text
            view = r.json()
            assert view["status"] == "awaiting_approval", view
            call_id = view["pending_approvals"][0]["call_id"]
            r = c.post(f"/v1/threads/{view['id']}/approvals/{call_id}", json={"approved": True})
            assert r.status_code == 200
            for _ in range(300):
                view = c.get(f"/v1/threads/{view['id']}").json()
                if view["status"] == "done":
                    break
                time.sleep(0.1)
            assert view["status"] == "done" and view["result"] == "ok"
            kinds = [e["kind"] for e in c.get(f"/v1/threads/{view['id']}/events").json()["events"]]
            assert kinds.count("tool_result") == 1 and kinds[-1] == "done"
    finally:
        for proc in (server, worker):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=40) for proc in (server, worker)]
    assert codes[0] == 0
