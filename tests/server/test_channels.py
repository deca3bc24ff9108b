"""routers/channels.py: the ways into a server, mounted under /v1/channels."""

from __future__ import annotations

from server_support import LiveServer, assert_problem


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
