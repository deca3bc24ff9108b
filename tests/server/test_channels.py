"""routers/channels.py: the ways into a server, mounted under /v1/channels."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from server_support import SECRET, LiveServer, asker, assert_problem, start_server
from threadline.cli import _register, app
from threadline.server import ServerConfig
from threadline.server.triggers import Trigger

_register()


def test_the_server_lists_its_channels(live: LiveServer) -> None:
    with live.client("reader") as c:
        r = c.get("/v1/channels")
    assert r.status_code == 200, r.text
    assert r.json()["items"] == [
        {"name": "api", "path": "/v1/threads", "enabled": True},
        {"name": "webhook", "path": "/v1/webhooks/inbound", "enabled": True},
    ]
    with live.client(None) as c:
        assert_problem(c.get("/v1/channels"), 401)
    with live.client("admin") as c:
        assert_problem(c.get("/v1/channels/slack"), 404)


def test_schedules_and_triggers_are_listed_with_status_and_destination(tmp_path: Path) -> None:
    trigger = Trigger(
        name="github-prs",
        agent="asker",
        secret="gh-secret-for-tests",
        events=("pull_request",),
        template="Review PR #{{ payload.number }}",
        to="slack:#reviews",
    )
    config = ServerConfig(webhook_secret=SECRET, poll_interval=0.2, triggers=(trigger,))
    server = start_server(tmp_path, [asker()], None, config=config, keys={"admin": ["admin"]})
    try:
        with server.client("admin") as c:
            for name, to in (("standup", "email:team@example.com"), ("nightly", None)):
                body = {"name": name, "cron": "0 9 * * 1-5", "agent": "asker", "message": "hi"}
                r = c.post("/v1/schedules", json=body | ({"to": to} if to else {}))
                assert r.status_code == 201, r.text
            assert c.post("/v1/schedules/nightly/pause").status_code == 200
            listed = c.get("/v1/channels").json()
        env = {"THREADLINE_API_KEY": server.keys["admin"], "COLUMNS": "200"}
        cli = CliRunner().invoke(app, ["triggers", "list", "--server", server.url], env=env)
    finally:
        server.stop()
    schedules = {s["name"]: s for s in listed["schedules"]}
    assert {n: (s["status"], s["to"]) for n, s in schedules.items()} == {
        "nightly": ("paused", None),
        "standup": ("active", "email:team@example.com"),
    }
    assert schedules["standup"]["next_tick"] is not None
    assert schedules["nightly"]["next_tick"] is None
    assert listed["triggers"] == [
        {
            "name": "github-prs",
            "agent": "asker",
            "status": "active",
            "path": "/v1/webhooks/triggers/github-prs",
            "signature": "github",
            "events": ["pull_request"],
            "to": "slack:#reviews",
        }
    ]
    assert cli.exit_code == 0, cli.output
    assert "github-prs" in cli.output and "slack:#reviews" in cli.output
