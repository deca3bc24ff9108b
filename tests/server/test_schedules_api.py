"""/v1/schedules on a real server: scopes, validation, pause/resume, and the server's own
runner firing a schedule; the CLI against it (`--server`) and against a local store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from server_support import LiveServer
from threadline.cli import _register, app

_register()

STANDUP = {
    "name": "standup",
    "cron": "0 9 * * 1-5",
    "agent": "deploybot",
    "message": "deploy the nightly build to staging",
    "timezone": "Europe/Paris",
    "missed": "catch-up",
    "to": "slack:#standup",
}


def test_schedules_need_admin_to_change_and_read_to_list(live: LiveServer) -> None:
    for key in ("reader", "launcher", "alice"):
        with live.client(key) as c:
            assert c.post("/v1/schedules", json=STANDUP).status_code == 403
    with live.client("admin") as c:
        r = c.post("/v1/schedules", json=STANDUP)
        assert r.status_code == 201, r.text
        added = r.json()
    assert added["name"] == "standup" and added["to"] == "slack:#standup" and not added["paused"]
    assert added["next_tick"] is not None and added["last_thread_id"] is None
    with live.client("reader") as c:
        assert [s["name"] for s in c.get("/v1/schedules").json()["items"]] == ["standup"]
        assert c.get("/v1/schedules/standup").json()["cron"] == "0 9 * * 1-5"
        for path in ("/v1/schedules/standup/pause", "/v1/schedules/standup/resume"):
            assert c.post(path).status_code == 403
        assert c.delete("/v1/schedules/standup").status_code == 403
    with live.client(None) as c:
        assert c.get("/v1/schedules").status_code == 401


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"cron": "every day at nine"}, 422, "cron expression"),
        ({"timezone": "Mars/Olympus"}, 422, "unknown time zone"),
        ({"agent": "nobody"}, 422, "no agent named"),
        ({"missed": "sometimes"}, 422, ""),
        ({"name": "has spaces"}, 422, ""),
    ],
)
def test_a_bad_schedule_is_a_422_and_stores_nothing(
    live: LiveServer, change: dict[str, str], status: int, says: str
) -> None:
    with live.client("admin") as c:
        r = c.post("/v1/schedules", json=STANDUP | change)
        assert r.status_code == status, r.text
        assert says in r.text
        assert c.get("/v1/schedules").json()["items"] == []


def test_duplicate_pause_resume_remove(live: LiveServer) -> None:
    with live.client("admin") as c:
        assert c.post("/v1/schedules", json=STANDUP).status_code == 201
        again = c.post("/v1/schedules", json=STANDUP)
        assert again.status_code == 409 and "already exists" in again.text
        paused = c.post("/v1/schedules/standup/pause").json()
        assert paused["paused"] and paused["next_tick"] is None
        resumed = c.post("/v1/schedules/standup/resume").json()
        assert not resumed["paused"] and resumed["next_tick"] is not None
        assert c.delete("/v1/schedules/standup").status_code == 204
        assert c.get("/v1/schedules/standup").status_code == 404
        assert c.delete("/v1/schedules/standup").status_code == 404
        assert c.post("/v1/schedules/nope/pause").status_code == 404


def test_the_server_fires_a_schedule_and_advances_its_thread(live: LiveServer) -> None:
    every_second = {"name": "ask", "cron": "* * * * * *", "agent": "asker", "message": "go"}
    with live.client("admin") as c:
        assert c.post("/v1/schedules", json=every_second).status_code == 201
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            last = c.get("/v1/schedules/ask").json()["last_thread_id"]
            if last:
                break
            time.sleep(0.1)
        assert last, "the server never fired the schedule"
        c.post("/v1/schedules/ask/pause")
    thread = live.wait_status(last, {"awaiting_human"})
    assert thread["status"] == "awaiting_human"  # advanced by the server's runner
    assert thread["metadata"]["channel"] == "cron"
    assert thread["metadata"]["schedule"] == "ask"


def test_the_cli_drives_a_servers_schedules(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THREADLINE_API_KEY", live.keys["admin"])
    runner = CliRunner()
    base = ["--server", live.url]
    added = runner.invoke(
        app,
        [
            "schedules",
            "add",
            "nightly",
            "--cron",
            "30 2 * * *",
            "--agent",
            "deploybot",
            "--message",
            "deploy",
            "--tz",
            "Asia/Tokyo",
            *base,
        ],
    )
    assert added.exit_code == 0, added.output
    assert "nightly: 30 2 * * * (Asia/Tokyo)" in added.output
    listed = runner.invoke(app, ["schedules", "list", *base])
    assert "nightly" in listed.output and "Asia/Tokyo" in listed.output
    assert "paused" in runner.invoke(app, ["schedules", "pause", "nightly", *base]).output
    assert runner.invoke(app, ["schedules", "remove", "nightly", *base]).exit_code == 0
    gone = runner.invoke(app, ["schedules", "remove", "nightly", *base])
    assert gone.exit_code == 1 and "no schedule named" in gone.output
    with live.client("reader") as c:
        assert c.get("/v1/schedules").json()["items"] == []


def test_the_cli_keeps_schedules_in_the_local_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THREADLINE_STORE", f"sqlite:///{tmp_path / 'local.db'}")
    runner = CliRunner()
    agent_ref = str(Path(__file__).resolve().parents[1] / "cron_agent.py") + ":agent"
    added = runner.invoke(
        app,
        [
            "schedules",
            "add",
            "report",
            "--cron",
            "0 8 * * mon",
            "--agent",
            agent_ref,
            "--message",
            "weekly report",
            "--missed",
            "catch-up",
            "--to",
            "email:team@example.com",
        ],
    )
    assert added.exit_code == 0, added.output
    assert "report: 0 8 * * mon (UTC) -> reporter" in added.output
    bad = runner.invoke(
        app, ["schedules", "add", "x", "--cron", "nope", "--agent", "a", "--message", "m"]
    )
    assert bad.exit_code == 1 and "cron expression" in bad.output
    dup = runner.invoke(
        app, ["schedules", "add", "report", "--cron", "0 8 * * *", "--agent", "a", "-m", "m"]
    )
    assert dup.exit_code == 1 and "already exists" in dup.output
    assert "paused" in runner.invoke(app, ["schedules", "pause", "report"]).output
    assert "next" in runner.invoke(app, ["schedules", "resume", "report"]).output
    listed = runner.invoke(app, ["schedules", "list"]).output
    assert "report" in listed and "email:team@example.com" in listed and "catch-up" in listed
    assert runner.invoke(app, ["schedules", "remove", "report"]).exit_code == 0
    assert "no schedules" in runner.invoke(app, ["schedules", "list"]).output
