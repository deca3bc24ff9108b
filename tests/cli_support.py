"""The `threadline` command as users run it, for the CLI tests: a real subprocess on a real
SQLite file in the test's folder (`cli`), or against a server (`remote_cli`)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

__all__ = [
    "CALC",
    "ROOT",
    "assert_frozen_unless_told_not_to",
    "cli",
    "stop_cleanly",
    "newest",
    "remote_cli",
]

ROOT = Path(__file__).resolve().parents[1]
CALC = str(ROOT / "examples" / "calculator" / "agent.py") + ":agent"


def cli(
    tmp: Path,
    *args: str,
    answers: list[object] | None = None,
    stdin: str | None = None,
    columns: int = 200,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`threadline ARGS` run in `cwd` (default `tmp`) on the store `tmp/t.db`, with the
    scripted model answering from `tmp/answers.json` (written from `answers` when given)."""
    env = {
        **(env or os.environ),
        "THREADLINE_STORE": f"sqlite:///{tmp}/t.db",
        "THREADLINE_LOG": "off",
        "COLUMNS": str(columns),
    }
    if answers is not None:
        (tmp / "answers.json").write_text(json.dumps(answers))
    if (tmp / "answers.json").exists():
        env["THREADLINE_MODEL"] = f"scripted:{tmp}/answers.json"
    return subprocess.run(
        [sys.executable, "-m", "threadline", *args],
        cwd=cwd or tmp,
        env=env,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
    )


def newest(tmp: Path) -> dict[str, object]:
    """The newest thread of `tmp`'s store, as a `threads list --json` row."""
    out = cli(tmp, "threads", "list", "--json")
    return json.loads(out.stdout.splitlines()[0])


def remote_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`threadline ARGS` with `env` (a served store's: `--server URL` reaches it)."""
    return subprocess.run(
        [sys.executable, "-m", "threadline", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_frozen_unless_told_not_to(ready: str, told_not_to: str, at_least: int) -> None:
    """A long-running command's ready line said it froze `at_least` start-up objects
    (`threadline.settle_heap`), and with THREADLINE_GC_FREEZE=0 that it did not."""
    found = re.search(r"([\d,]+) start-up objects frozen", ready)
    assert found, ready
    assert int(found.group(1).replace(",", "")) > at_least, ready
    assert "heap not frozen (THREADLINE_GC_FREEZE=0)" in told_not_to, told_not_to
    assert "objects frozen" not in told_not_to, told_not_to


def stop_cleanly(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM a long-running command and wait for it (killed if it outlives 30 s); its
    stdout and stderr, once it exited 0."""
    try:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    return out, err
