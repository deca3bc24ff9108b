"""Killing the process between steps loses no event: a resumed thread continues from its log."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

AGENT = str(Path(__file__).parent / "fixtures" / "counting_agent.py") + ":agent"


def _events(db: Path) -> list[tuple[int, str]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT seq, body FROM events ORDER BY seq").fetchall()
    except sqlite3.OperationalError:
        return []


@pytest.mark.parametrize("kill_after", random.Random(7).sample(range(2, 24), 5))
def test_sigkill_at_a_random_step_then_resume(tmp_path: Path, kill_after: int) -> None:
    db = tmp_path / "t.db"
    env = {
        **os.environ,
        "THREADLINE_STORE": f"sqlite:///{db}",
        "THREADLINE_LOG": "off",
        "COUNTING_STEPS": "8",
        "COUNTING_DELAY": "0.05",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "threadline", "run", AGENT, "count"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while len(_events(db)) < kill_after and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    before = _events(db)
    assert before, "the thread should have started"
    assert [seq for seq, _ in before] == list(range(len(before)))

    tid = json.loads(before[0][1])
    with sqlite3.connect(db) as conn:
        (thread_id,) = conn.execute("SELECT id FROM threads").fetchone()
    out = subprocess.run(
        [sys.executable, "-m", "threadline", "resume", thread_id],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    after = _events(db)
    if len(before) >= 26:  # the run had already finished before the kill landed
        assert "nothing to resume" in out.stderr
    else:
        assert out.returncode == 0, out.stderr
    assert after[: len(before)] == before, "events written before the kill must be unchanged"
    assert [seq for seq, _ in after] == list(range(len(after)))
    kinds = [json.loads(body)["kind"] for _, body in after]
    assert kinds[-1] == "done" and kinds.count("tool_result") == 8
    assert tid["kind"] == "user_message"
