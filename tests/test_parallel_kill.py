"""SIGKILL between two approved calls of one answer: resuming runs exactly the rest (issue 13)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from kill_support import assert_replays, cli, kill_at, stored_events

FIXTURE = Path(__file__).parent / "fixtures" / "payments_agent.py"


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
    out = cli(env, tmp_path, "run", agent, "pay the three invoices")
    assert out.returncode == 0, out.stderr
    events = stored_events(db)
    assert [e["kind"] for e in events[-3:]] == ["approval_requested"] * 3
    with sqlite3.connect(db) as conn:
        (thread_id,) = conn.execute("SELECT id FROM threads").fetchone()
    a, b, c = (str(e["call_id"]) for e in events[-3:])
    verdicts = [
        {"call_id": a},
        {"call_id": b, "approved": False, "comment": "B is disputed"},
        {"call_id": c, "edited_arguments": {"invoice": "C", "amount": 25}},
    ]
    verdicts_json = json.dumps(verdicts)
    kill_at(env, tmp_path, db, "tool_result", "approve", thread_id, "--verdicts", verdicts_json)
    before = stored_events(db)
    results = [e["call_id"] for e in before if e["kind"] == "tool_result"]
    assert results == [a], "killed between the first and the second payment"
    assert log.read_text().splitlines()[:2] == ["start A 1", "end A"]

    out = cli(env, tmp_path, "resume", thread_id)
    assert out.returncode == 0, out.stderr
    after = stored_events(db)
    assert after[: len(before)] == before, "nothing written before the kill changes"
    assert after[-1]["kind"] == "done"
    assert [e["call_id"] for e in after if e["kind"] == "tool_result"] == [a, c]
    lines = log.read_text().splitlines()
    assert lines.count("end A") == 1 and lines.count("end C") == 1
    assert not any(line.startswith("start B") for line in lines)
    paid = [e["result"] for e in after if e["kind"] == "tool_result"]
    assert paid == ["paid A: 10", "paid C: 25"]

    assert_replays("payments_agent", thread_id, "payments", after)
