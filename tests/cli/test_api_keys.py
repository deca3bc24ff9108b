"""`threadline keys`: create, list and revoke API keys in a real SQLite store. A key's use
by a running server (401 once revoked) is tested with `threadline serve` in
tests/cli/test_serve.py."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from threadline.cli import _register, app

_register()


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "threads.db"
    monkeypatch.setenv("THREADLINE_STORE", f"sqlite:///{path}")
    monkeypatch.setenv("THREADLINE_LOG", "off")
    monkeypatch.setenv("COLUMNS", "200")
    return path


def keys(*args: str) -> Result:
    return CliRunner().invoke(app, ["keys", *args])


def test_a_key_is_created_listed_and_revoked_and_its_secret_is_never_stored(db: Path) -> None:
    created = keys("create", "--name", "ops", "--scope", "launch,read", "--scope", "respond")
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    assert secret.startswith("tl_")
    assert "with scopes launch, respond, read" in created.stderr
    key_id = created.stderr.split("created ", 1)[1].split()[0]
    with sqlite3.connect(db) as conn:
        [(stored,)] = conn.execute("SELECT secret_hash FROM api_keys").fetchall()
    assert stored == hashlib.sha256(secret.encode()).hexdigest()

    listed = keys("list")
    assert listed.exit_code == 0
    assert key_id in listed.stdout and "ops" in listed.stdout and secret not in listed.stdout
    [row] = [line for line in listed.stdout.splitlines() if key_id in line]
    assert "launch,respond,read" in row

    revoked = keys("revoke", key_id)
    assert revoked.exit_code == 0 and f"revoked {key_id}" in revoked.stderr
    [row] = [line for line in keys("list").stdout.splitlines() if key_id in line]
    assert row.count(":") == 2  # created and revoked, each with a time of day
    again = keys("revoke", key_id)
    assert again.exit_code == 1 and "no active key" in again.stderr


def test_bad_scope_and_unknown_key(db: Path) -> None:
    r = keys("create", "--name", "x", "--scope", "root")
    assert r.exit_code == 1 and "unknown: root" in r.stderr
    r = keys("revoke", "key_nope")
    assert r.exit_code == 1 and "no active key" in r.stderr
