"""Webhook triggers on a real server: a GitHub-style delivery launches one thread however
often it is sent; forged or tampered deliveries are refused and change nothing."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server_support import SECRET, LiveServer, asker, start_server
from threadline.errors import ConfigError
from threadline.runtime import Runtime
from threadline.server import ServerConfig, Services
from threadline.server.triggers import Trigger, parse_triggers, sign_github
from threadline.server.webhooks import signed_headers
from threadline.stores import MemoryStore

GITHUB_SECRET = "gh-secret-for-tests"
PLAIN_SECRET = "plain-secret-for-tests"
PR = {
    "action": "opened",
    "number": 42,
    "pull_request": {"title": "Fix the flaky deploy", "user": {"login": "octocat"}},
}

TRIGGERS = (
    Trigger(
        name="github-prs",
        agent="asker",
        secret=GITHUB_SECRET,
        events=("pull_request",),
        template="Review PR #{{ payload.number }} by {{ payload.pull_request.user.login }}: "
        "{{ payload.pull_request.title }}",
        to="slack:#reviews",
    ),
    Trigger(
        name="alerts",
        agent="asker",
        secret=PLAIN_SECRET,
        signature="threadline",
        delivery_header="X-Alert-Id",
        template="{{ payload.alert }} is firing on {{ payload.host }}",
    ),
)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[LiveServer]:
    config = ServerConfig(webhook_secret=SECRET, poll_interval=0.2, triggers=TRIGGERS)
    server = start_server(tmp_path, [asker()], None, config=config, keys={"admin": ["admin"]})
    yield server
    server.stop()


def github(
    body: bytes, *, delivery: str = "d-1", event: str = "pull_request", secret: str = GITHUB_SECRET
) -> dict[str, str]:
    return {
        "X-Hub-Signature-256": sign_github(secret, body),
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": event,
        "Content-Type": "application/json",
    }


def rows(server: LiveServer, sql: str) -> list[tuple]:
    with sqlite3.connect(server.db_path) as conn:
        return conn.execute(sql).fetchall()


def post(server: LiveServer, name: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/webhooks/triggers/{name}", content=body, headers=headers)


def test_a_delivery_sent_three_times_launches_exactly_once(served: LiveServer) -> None:
    body = json.dumps(PR).encode()
    answers = [post(served, "github-prs", body, github(body)) for _ in range(3)]
    assert [r.status_code for r in answers] == [201, 200, 200]
    assert [r.json()["status"] for r in answers] == ["launched", "duplicate", "duplicate"]
    thread_id = answers[0].json()["thread_id"]
    assert rows(served, "SELECT id FROM threads") == [(thread_id,)]
    first = json.loads(rows(served, "SELECT body FROM events WHERE seq = 0")[0][0])
    assert first["text"] == "Review PR #42 by octocat: Fix the flaky deploy"
    assert (first["channel"], first["sender"]) == ("webhook", "trigger:github-prs")
    thread = served.wait_status(thread_id, {"awaiting_human"})
    assert thread["status"] == "awaiting_human"  # the server's runner advanced it
    assert thread["metadata"] == {
        "channel": "webhook",
        "trigger": "github-prs",
        "delivery": "d-1",
        "event": "pull_request",
        "reply_to": "slack:#reviews",
    }
    # Another delivery id is another event: it launches.
    again = post(served, "github-prs", body, github(body, delivery="d-2"))
    assert again.status_code == 201 and again.json()["thread_id"] != thread_id


def test_forged_and_tampered_deliveries_are_refused_and_change_nothing(
    served: LiveServer,
) -> None:
    body = json.dumps(PR).encode()
    tampered = json.dumps(PR | {"number": 666}).encode()
    refused = [
        post(served, "github-prs", body, github(body, secret="not-the-secret")),
        post(served, "github-prs", tampered, github(body)),
        post(served, "github-prs", body, {"X-GitHub-Delivery": "d-1"}),
        post(served, "github-prs", body, github(body) | {"X-Hub-Signature-256": "sha256=00"}),
    ]
    assert [r.status_code for r in refused] == [401, 401, 401, 401]
    assert "signature" in refused[0].json()["detail"]
    assert rows(served, "SELECT id FROM threads") == []
    assert rows(served, "SELECT id FROM webhook_deliveries") == []
    # The genuine delivery with the same id is not taken for a replay of the forgeries.
    assert post(served, "github-prs", body, github(body)).status_code == 201


def test_other_events_are_acknowledged_and_ignored(served: LiveServer) -> None:
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    r = post(served, "github-prs", body, github(body, event="push"))
    assert r.status_code == 202 and r.json()["status"] == "ignored"
    assert rows(served, "SELECT id FROM threads") == []


def test_a_template_that_fails_is_a_422_and_a_fixed_retry_launches(served: LiveServer) -> None:
    broken = json.dumps({"number": 7}).encode()  # no pull_request object
    r = post(served, "github-prs", broken, github(broken, delivery="d-9"))
    assert r.status_code == 422 and "template failed" in r.json()["detail"]
    assert rows(served, "SELECT id FROM threads") == []
    fixed = json.dumps(PR).encode()
    assert post(served, "github-prs", fixed, github(fixed, delivery="d-9")).status_code == 201
    not_json = b"{nope"
    assert post(served, "github-prs", not_json, github(not_json, delivery="x")).status_code == 422


def test_a_plain_json_trigger_with_the_timestamped_signature(served: LiveServer) -> None:
    body = json.dumps({"alert": "DiskFull", "host": "db-1"}).encode()
    headers = signed_headers(PLAIN_SECRET, body) | {"X-Alert-Id": "a-1"}
    assert post(served, "alerts", body, headers).status_code == 201
    assert post(served, "alerts", body, headers).status_code == 200
    stale = signed_headers(PLAIN_SECRET, body, now=time.time() - 3600) | {"X-Alert-Id": "a-2"}
    r = post(served, "alerts", body, stale)
    assert r.status_code == 401 and "stale" in r.json()["detail"]
    wrong = signed_headers(GITHUB_SECRET, body) | {"X-Alert-Id": "a-3"}
    assert post(served, "alerts", body, wrong).status_code == 401
    texts = rows(served, "SELECT body FROM events WHERE seq = 0")
    assert [json.loads(t[0])["text"] for t in texts] == ["DiskFull is firing on db-1"]
    assert post(served, "nope", body, headers).status_code == 404


def test_triggers_from_a_config_file_read_their_secrets_from_the_environment() -> None:
    items = [{"name": "gh", "agent": "asker", "secret_env": "GH_SECRET", "template": "hi"}]
    (trigger,) = parse_triggers(items, environ={"GH_SECRET": "s3cret"})
    assert trigger.secret == "s3cret" and trigger.signature == "github"
    with pytest.raises(ConfigError, match=r"\$GH_SECRET"):
        parse_triggers(items, environ={})
    with pytest.raises(ConfigError, match="unknown keys colour"):
        parse_triggers([items[0] | {"colour": "red"}], environ={"GH_SECRET": "s"})
    with pytest.raises(ConfigError, match="template does not parse"):
        parse_triggers([items[0] | {"template": "{{ oops"}], environ={"GH_SECRET": "s"})
    with pytest.raises(ConfigError, match="same name"):
        parse_triggers(items * 2, environ={"GH_SECRET": "s"})


def test_a_trigger_for_an_agent_the_server_does_not_serve_is_refused_at_start() -> None:
    config = ServerConfig(triggers=TRIGGERS)
    with pytest.raises(ConfigError, match="does not serve"):
        Services.build(config, lambda observers: Runtime(MemoryStore(), observers=observers))
