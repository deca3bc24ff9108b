"""Three `threadline worker` processes on PostgreSQL race for five ticks of a schedule
(every two seconds: second-level cron, no sleeping for minutes): each tick launches
exactly one thread, and every thread is advanced to its end."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from pg_support import pg_store_url

HERE = Path(__file__).resolve().parent
AGENT = f"{HERE / 'cron_agent.py'}:agent"

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _threadline(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threadline", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_three_workers_fire_each_of_five_ticks_exactly_once(
    postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "THREADLINE_STORE": pg_store_url(postgres_url, pg_schema),
        "THREADLINE_LOG": "off",
    }
    added = _threadline(
        "schedules",
        "add",
        "tick",
        "--cron",
        "* * * * * */2",
        "--agent",
        AGENT,
        "--message",
        "send the report",
        env=env,
    )
    assert added.returncode == 0, added.stderr
    logs = [tmp_path / f"worker-{i}.log" for i in range(3)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "threadline", "worker", "--agent", AGENT, "--poll", "0.5"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
        )
        for log in logs
    ]
    try:
        deadline = time.monotonic() + 60
        while not all("threadline worker" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, "the workers did not start"
            assert all(w.poll() is None for w in workers), [log.read_text() for log in logs]
            time.sleep(0.1)
        now = datetime.now(UTC)
        first = datetime.fromtimestamp(math.ceil(now.timestamp() / 2) * 2 + 2, UTC)
        window = [first + timedelta(seconds=2 * n) for n in range(5)]
        while datetime.now(UTC) < window[-1] + timedelta(seconds=3):
            time.sleep(0.2)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        outputs = [w.communicate(timeout=60)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], [log.read_text() for log in logs]
    stats = [json.loads(out.strip().splitlines()[-1]) for out in outputs]

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{pg_schema}"')
        threads = conn.execute(
            "SELECT id, status, metadata->>'tick', metadata->>'channel' FROM threads"
        ).fetchall()
        firings = conn.execute("SELECT tick, thread_id FROM schedule_firings").fetchall()
    ticks = [datetime.fromisoformat(t[2]) for t in threads]
    assert len(ticks) == len(set(ticks)), "a tick launched two threads"
    for tick in window:
        assert ticks.count(tick) == 1, f"tick {tick} fired {ticks.count(tick)} times"
    assert {t[3] for t in threads} == {"cron"}
    assert {t[1] for t in threads} == {"done"}, threads
    assert sorted((f[0], f[1]) for f in firings) == sorted(
        (datetime.fromisoformat(t[2]), t[0]) for t in threads
    )
    assert sum(s["fired"] for s in stats) == len(threads)
    assert sum(s["fire_lost"] for s in stats) > 0, "the workers never raced for a tick"
    print(
        f"\n{len(threads)} ticks fired once each by 3 workers: fired per worker "
        f"{[s['fired'] for s in stats]}, claims lost {[s['fire_lost'] for s in stats]}"
    )
