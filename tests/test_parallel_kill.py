"""SIGKILL between two approved calls of one answer: resuming runs exactly the rest (issue 13)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from threadline import replay_thread
from threadline.events import Thread, event_from_json

FIXTURE = Path(__file__).parent / "fixtures" / "payments_agent.py"


def _kinds(db: Path) -> list[dict[str, object]]:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            rows = conn.execute("SELECT body FROM events ORDER BY seq").fetchall()
    except sqlite3.OperationalError:
        return []
    return [json.loads(body) for (body,) in rows]


def _cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threadline", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sigkill_between_the_first_and_second_payment_resumes_the_second(
    tmp_path: Path,
) -> None:
    db, log = tmp_path / "t.db", tmp_path / "payments.log"
    env = {
        **os.environ,
        "THREADLINE_STORE": f"sqlite:///{db}",
        "THREADLINE_LOG": "off",
        "PAYMENTS_LOG": str(log),
        "PAYMENTS_DELAY": "1.0",
    }
    agent = f"{FIXTURE}:agent"
    out = _cli(env, tmp_path, "run", agent, "pay the three invoices")
    assert out.returncode == 0, out.stderr
    events = _kinds(db)
    assert [e["kind"] for e in events[-3:]] == ["approval_requested"] * 3
    with sqlite3.connect(db) as conn:
        (thread_id,) = conn.execute("SELECT id FROM threads").fetchone()
    a, b, c = (str(e["call_id"]) for e in events[-3:])
    verdicts = [
        {"call_id": a},
        {"call_id": b, "approved": False, "comment": "B is disputed"},
        {"call_id": c, "edited_arguments": {"invoice": "C", "amount": 25}},
    ]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "threadline",
            "approve",
            thread_id,
            "--verdicts",
            json.dumps(verdicts),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any(e["kind"] == "tool_result" for e in _kinds(db)):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    before = _kinds(db)
    results = [e["call_id"] for e in before if e["kind"] == "tool_result"]
    assert results == [a], "killed between the first and the second payment"
    assert log.read_text().splitlines()[:2] == ["start A 1", "end A"]

    out = _cli(env, tmp_path, "resume", thread_id)
    assert out.returncode == 0, out.stderr
    after = _kinds(db)
    assert after[: len(before)] == before, "nothing written before the kill changes"
    assert after[-1]["kind"] == "done"
    assert [e["call_id"] for e in after if e["kind"] == "tool_result"] == [a, c]
    lines = log.read_text().splitlines()
    assert lines.count("end A") == 1 and lines.count("end C") == 1
    assert not any(line.startswith("start B") for line in lines)
    paid = [e["result"] for e in after if e["kind"] == "tool_result"]
    assert paid == ["paid A: 10", "paid C: 25"]

    sys.path.insert(0, str(FIXTURE.parent))
    try:
        import payments_agent
    finally:
        sys.path.pop(0)
    recorded = Thread(thread_id, "payments", [event_from_json(json.dumps(e)) for e in after])
    replay_thread(payments_agent.agent, recorded)
