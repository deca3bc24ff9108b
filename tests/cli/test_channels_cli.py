"""`threadline channels` as users run it: the email receiver as its own process (real
SMTP on loopback, a real SQLite file shared with whatever advances the threads)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from server_support import free_port

ROOT = Path(__file__).resolve().parents[2]
CALC = str(ROOT / "examples" / "calculator" / "agent.py") + ":agent"


def _env(tmp: Path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "THREADLINE_STORE": f"sqlite:///{tmp}/t.db",
        "THREADLINE_LOG": "off",
        "THREADLINE_CHANNELS": "email",
        "THREADLINE_EMAIL_ADDRESS": "calc@example.com",
        "THREADLINE_EMAIL_SECRET": "a-long-enough-token-secret",
        "THREADLINE_EMAIL_LISTEN": f"127.0.0.1:{port}",
        "COLUMNS": "200",
    }


def _send(port: int) -> None:
    mail = EmailMessage()
    mail["From"] = "amy@customer.org"
    mail["To"] = "calc@example.com"
    mail["Subject"] = "Sum"
    mail["Message-ID"] = "<sum-1@customer.org>"
    mail.set_content("What is 2 + 3?")
    asyncio.run(aiosmtplib.send(mail, hostname="127.0.0.1", port=port, timeout=20))


def test_the_email_receiver_runs_alone_and_launches_threads(tmp_path: Path) -> None:
    port = free_port()
    env = _env(tmp_path, port)
    listed = subprocess.run(
        [sys.executable, "-m", "threadline", "channels", "list"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    # Two example agents are served from the project folder: which one must be said.
    assert "THREADLINE_EMAIL_AGENT" in listed.stdout
    env["THREADLINE_EMAIL_AGENT"] = "calculator"
    listed = subprocess.run(
        [sys.executable, "-m", "threadline", "channels", "list"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in listed.stdout.splitlines()]
    assert {c[0]: c[1] for c in cells if c} == {"email": "on", "slack": "off"}, listed.stdout
    proc = subprocess.Popen(
        [sys.executable, "-m", "threadline", "channels", "email", "--agent", CALC],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _send(port)
                break
            except (OSError, aiosmtplib.SMTPException):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        with sqlite3.connect(tmp_path / "t.db") as conn:
            rows = conn.execute("SELECT agent, status, metadata FROM threads").fetchall()
        assert len(rows) == 1
        agent, status, metadata = rows[0]
        # Launched, left `running` for a worker or server to advance (this one advances none).
        assert (agent, status) == ("calculator", "running")
        assert '"message_id": "<sum-1@customer.org>"' in metadata
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "listening" in err


def test_the_receiver_needs_somewhere_to_listen(tmp_path: Path) -> None:
    env = {**_env(tmp_path, 1), "THREADLINE_EMAIL_LISTEN": ""}
    done = subprocess.run(
        [sys.executable, "-m", "threadline", "channels", "email", "--agent", CALC],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "THREADLINE_EMAIL_LISTEN" in done.stderr
