"""SIGKILL between two attempts of a retried tool call: the resumed run makes the next
attempt, not the first again, and never takes the call for a "maybe ran" (issue 13)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from kill_support import assert_replays, cli, kill_at, stored_events

FIXTURE = Path(__file__).parent / "fixtures" / "flaky_agent.py"


def test_sigkill_between_attempts_resumes_at_the_next_attempt(tmp_path: Path) -> None:
    db, log = tmp_path / "t.db", tmp_path / "attempts.log"
    env = {
        **os.environ,
        "THREADLINE_STORE": f"sqlite:///{db}",
        "THREADLINE_LOG": "off",
        "FLAKY_LOG": str(log),
    }
    # killed inside the 1-2 s backoff after attempt 1
    kill_at(env, tmp_path, db, "tool_attempt_failed", "run", f"{FIXTURE}:agent", "charge o-1")
    before = stored_events(db)
    assert [e["kind"] for e in before[-2:]] == ["tool_started", "tool_attempt_failed"]
    assert log.read_text().count("attempt ") == 1

    with sqlite3.connect(db) as conn:
        (thread_id,) = conn.execute("SELECT id FROM threads").fetchone()
    out = cli(env, tmp_path, "resume", thread_id)
    assert out.returncode == 0, out.stderr
    after = stored_events(db)
    assert after[: len(before)] == before, "nothing written before the kill changes"
    assert after[-1]["kind"] == "done", after[-1]
    runs = [line.split() for line in log.read_text().splitlines()]
    assert [r[1] for r in runs] == ["1", "2", "3"], "resumed at attempt 2, not 1 again"
    assert len({r[2] for r in runs}) == 1, "one idempotency key for every attempt"
    assert [e["attempt"] for e in after if e["kind"] == "tool_started"] == [1, 2, 3]
    assert [e["attempt"] for e in after if e["kind"] == "tool_attempt_failed"] == [1, 2]
    assert not any(e["kind"] in ("escalated", "tool_error") for e in after)
    keys = {e["idempotency_key"] for e in after if e["kind"] == "tool_started"}
    assert keys == {runs[0][2]}

    assert_replays("flaky_agent", thread_id, "flaky", after)
