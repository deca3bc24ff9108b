"""The outbox in `threadline worker` processes, with real SMTP on loopback:

* a final answer appended just before its process is killed (SIGKILL, before the
  dispatcher could record it) is mailed once by the next worker to start, and not again
  by the one after;
* three workers racing on PostgreSQL send each reminder once and expire each unanswered
  approval once (no `threadline serve` running).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from mail_support import MailServer

from pg_support import pg_store_url

HERE = Path(__file__).resolve().parent
REPORTER = f"{HERE.parent / 'cron_agent.py'}:agent"
DEPLOYER = f"{HERE / 'expiring_agent.py'}:agent"
CAUGHT_UP = "channels: looked at"

# A process that appends a final answer and dies at once: an observer ahead of the
# dispatcher kills it, so the answer is checkpointed but no notice is recorded.
KILLED_AFTER_THE_ANSWER = """
import asyncio, os, signal, sys
sys.path.insert(0, {tests!r})
from cron_agent import agent
from threadline import Runtime
from threadline.channels import Dispatcher, open_channels
from threadline.events import Done
from threadline.stores import SQLiteStore

def die(thread, events):
    if any(isinstance(e, Done) for e in events):
        os.kill(os.getpid(), signal.SIGKILL)

async def main():
    dispatcher = Dispatcher(open_channels("email", agents=["reporter"]))
    runtime = Runtime(SQLiteStore(sys.argv[1]), agents=[agent], observers=[die, dispatcher])
    dispatcher.bind(runtime)
    await runtime.launch(
        "reporter", "send the report", metadata={{"reply_to": "email:amy@example.com"}}
    )

asyncio.run(main())
"""


def _env(store: str, smtp_port: int, agent: str) -> dict[str, str]:
    return {
        **os.environ,
        "THREADLINE_STORE": store,
        "THREADLINE_LOG": "off",
        "THREADLINE_CHANNELS": "email",
        "THREADLINE_EMAIL_ADDRESS": "bot@example.com",
        "THREADLINE_EMAIL_SECRET": "a-long-enough-test-secret-0123456789",
        "THREADLINE_EMAIL_AGENT": agent,
        "THREADLINE_EMAIL_SMTP_HOST": "127.0.0.1",
        "THREADLINE_EMAIL_SMTP_PORT": str(smtp_port),
    }


def _worker(agent: str, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "threadline", "worker", "--agent", agent, "--poll", "0.2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )


def _wait_for(text: str, logs: list[Path], workers: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + 90
    while not all(text in log.read_text() for log in logs):
        assert time.monotonic() < deadline, [log.read_text() for log in logs]
        assert all(w.poll() is None for w in workers), [log.read_text() for log in logs]
        time.sleep(0.1)


def _stop(workers: list[subprocess.Popen[str]], logs: list[Path]) -> list[dict[str, int]]:
    for w in workers:
        w.send_signal(signal.SIGTERM)
    outputs = [w.communicate(timeout=60)[0] for w in workers]
    assert [w.returncode for w in workers] == [0] * len(workers), [x.read_text() for x in logs]
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


@pytest.mark.slow
def test_an_answer_appended_just_before_a_kill_is_mailed_once_after_restart(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"
    mails = MailServer().start()
    try:
        env = _env(f"sqlite:///{db}", mails.port, "reporter")
        child = subprocess.run(
            [sys.executable, "-c", KILLED_AFTER_THE_ANSWER.format(tests=str(HERE.parent)), db],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert child.returncode == -signal.SIGKILL, child.stderr
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT status FROM threads").fetchall() == [("done",)]
            assert conn.execute("SELECT count(*) FROM channel_outbox").fetchone() == (0,)
        assert mails.inbox == []

        stats = []
        for run in range(2):  # the restart mails the answer; the next start mails nothing
            log = tmp_path / f"worker-{run}.log"
            worker = _worker(REPORTER, env, log)
            _wait_for(CAUGHT_UP, [log], [worker])
            if run == 0:
                assert len(mails.wait(1, timeout=60)) == 1
            stats += _stop([worker], [log])
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT status, attempts FROM channel_outbox").fetchall()
    finally:
        mails.stop()
    assert len(mails.inbox) == 1
    assert mails.inbox[0]["To"] == "amy@example.com"
    assert "report sent" in mails.inbox[0].get_content()
    assert rows == [("sent", 1)]
    assert [s["notices_sent"] for s in stats] == [1, 0]


@pytest.mark.postgres
@pytest.mark.slow
def test_three_workers_send_each_reminder_once_and_expire_each_approval_once(
    postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    from expiring_agent import agent

    from threadline import Runtime
    from threadline.stores import open_store

    store_url = pg_store_url(postgres_url, pg_schema)
    mails = MailServer().start()
    logs = [tmp_path / f"worker-{i}.log" for i in range(3)]
    env = _env(store_url, mails.port, "deployer")
    workers = [_worker(DEPLOYER, env, log) for log in logs]
    try:
        _wait_for(CAUGHT_UP, logs, workers)

        async def launch() -> list[str]:
            runtime = Runtime(open_store(store_url), agents=[agent])
            try:
                return [
                    (
                        await runtime.launch(
                            "deployer",
                            f"deploy build {n}",
                            metadata={"reply_to": "email:ops@example.com"},
                            advance=False,
                        )
                    ).id
                    for n in range(3)
                ]
            finally:
                await runtime.store.close()

        ids = asyncio.run(launch())
        # Per thread: the approval, its reminder, the expiry's rejection, the answer.
        assert len(mails.wait(4 * len(ids), timeout=90)) == 4 * len(ids)
        time.sleep(1.5)  # a duplicate would be sent within a sweep or two
    finally:
        stats = _stop(workers, logs)
        mails.stop()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{pg_schema}"')
        threads = dict(conn.execute("SELECT id, status FROM threads").fetchall())
        verdicts = conn.execute(
            "SELECT thread_id, body->>'channel' FROM events WHERE body->>'kind' = 'approval'"
        ).fetchall()
        outbox = conn.execute("SELECT channel, status, attempts FROM channel_outbox").fetchall()
    assert threads == dict.fromkeys(ids, "done")
    assert sorted(verdicts) == sorted((i, "expiry") for i in ids)
    assert len(mails.inbox) == 4 * len(ids)
    for thread_id in ids:
        bodies = [m.get_content() for m in mails.inbox if m["X-Threadline-Thread"] == thread_id]
        assert sum(b.startswith("Reminder: this is still waiting") for b in bodies) == 1
        assert sum("nobody answered in time" in b for b in bodies) == 1
        assert sum("Not deployed" in b for b in bodies) == 1
    assert {(status, attempts) for _, status, attempts in outbox} == {("sent", 1)}
    assert sum(s["notices_sent"] for s in stats) == 4 * len(ids)
    print(f"\nnotices sent per worker: {[s['notices_sent'] for s in stats]}")
