"""What the SIGKILL tests share: reading the events a killed process left in its SQLite
file, and replaying them against the fixture agent that wrote them."""

from __future__ import annotations

import importlib
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

FIXTURES = Path(__file__).parent / "fixtures"


def stored_events(db: Path) -> list[dict[str, object]]:
    """Every stored event of the database's threads, as JSON, in seq order ([] before the
    file or its tables exist)."""
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            rows = conn.execute("SELECT body FROM events ORDER BY seq").fetchall()
    except sqlite3.OperationalError:
        return []
    return [json.loads(body) for (body,) in rows]


def assert_replays(
    fixture: str, thread_id: str, agent: str, events: list[dict[str, object]]
) -> None:
    """Replay the stored `events` with `agent` of tests/fixtures/<fixture>.py: every event
    is re-derived or taken as recorded (`replay_thread` raises on the first difference)."""
    sys.path.insert(0, str(FIXTURES))
    try:
        module = importlib.import_module(fixture)
    finally:
        sys.path.pop(0)
    recorded = Thread(thread_id, agent, [event_from_json(json.dumps(e)) for e in events])
    derived = replay_thread(module.agent, recorded)
    assert [e.model_dump() for e in derived.events] == [e.model_dump() for e in recorded.events]


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `threadline ARGS` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "threadline", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def kill_at(env: dict[str, str], cwd: Path, db: Path, kind: str, *args: str) -> None:
    """Start `threadline ARGS` and SIGKILL it as soon as an event of `kind` is stored."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "threadline", *args],
        env={**os.environ, **env},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any(e["kind"] == kind for e in stored_events(db)):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
