"""Small pure pieces: which scope a route needs, loopback detection, signatures."""

from __future__ import annotations

import pytest

from threadline.cli.serve import is_loopback
from threadline.server.auth import required_scope
from threadline.server.webhooks import WebhookRejected, sign, signed_headers, verify


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/v1/threads", "read"),
        ("GET", "/v1/threads/th_1/events/stream", "read"),
        ("POST", "/v1/threads", "launch"),
        ("POST", "/v1/threads/th_1/messages", "launch"),
        ("POST", "/v1/threads/th_1/fork", "launch"),
        ("POST", "/v1/threads/th_1/approvals/c4", "respond"),
        ("POST", "/v1/threads/th_1/approvals/pause", "respond"),  # a call id named "pause"
        ("POST", "/v1/threads/th_1/responses", "respond"),
        ("POST", "/v1/threads/th_1/pause", "admin"),
        ("POST", "/v1/threads/th_1/resume", "admin"),
        ("POST", "/v1/webhooks/inbound", None),
        ("GET", "/healthz", None),
        ("GET", "/ui/app.js", None),
    ],
)
def test_required_scope(method: str, path: str, scope: str | None) -> None:
    assert required_scope(method, path) == scope


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_signature_round_trip_and_failures() -> None:
    body = b'{"a": 1}'
    headers = signed_headers("s3cret", body, now=1_700_000_000)
    assert headers["X-Threadline-Signature"] == sign("s3cret", 1_700_000_000, body)
    assert verify("s3cret", headers, body, now=1_700_000_100) == headers["X-Threadline-Signature"]
    lower = {k.lower(): v for k, v in headers.items()}
    verify("s3cret", lower, body, now=1_700_000_000)  # header names are case-insensitive
    for secret, hdrs, raw, now, reason in [
        ("other", headers, body, 1_700_000_000, "does not match"),
        ("s3cret", headers, body + b" ", 1_700_000_000, "does not match"),
        ("s3cret", headers, body, 1_700_000_301, "stale"),
        ("s3cret", {}, body, 1_700_000_000, "unsigned"),
    ]:
        with pytest.raises(WebhookRejected, match=reason):
            verify(secret, hdrs, raw, now=now)


def test_serve_config_file(tmp_path) -> None:
    from threadline.cli.serve import load_serve_config
    from threadline.errors import ConfigError

    good = tmp_path / "good.yaml"
    good.write_text("agents:\n  - a.py:agent\nport: 9000\n")
    assert load_serve_config(good) == {"agents": ["a.py:agent"], "port": 9000}
    for text, message in [
        ("agents: a.py:agent\n", "must be a list"),
        ("agent: [x]\n", "unknown keys agent"),
        ("- 1\n", "must be a mapping"),
        ("agents: [\n", "cannot read"),
    ]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_serve_config(bad)


async def test_key_store_failure_is_a_503_problem_not_a_crash() -> None:
    import httpx

    from threadline.server.auth import AuthMiddleware
    from threadline.stores import MemoryStore

    class Broken(MemoryStore):
        async def find_api_key(self, secret_hash: str):  # type: ignore[override]
            raise OSError("disk on fire")

    async def app(scope, receive, send) -> None:  # never reached
        raise AssertionError("the route ran without a key check")

    guarded = AuthMiddleware(app, store=Broken(), enabled=True)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=guarded), base_url="http://t"
    ) as c:
        r = await c.get("/v1/threads", headers={"Authorization": "Bearer tl_x"})
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert "disk on fire" not in r.text
