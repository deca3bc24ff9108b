"""server/app.py: the app as declared: its routers, the order of its middleware, the
problem handlers and the OpenAPI document (a real uvicorn on loopback)."""

from __future__ import annotations

import httpx

from server_support import LiveServer


def test_the_openapi_document_names_the_served_agents_and_the_key_scheme(
    live: LiveServer,
) -> None:
    with live.client(None) as c:
        schema = c.get("/openapi.json").json()
    launch = schema["components"]["schemas"]["LaunchBody"]["properties"]["agent"]
    assert launch["enum"] == sorted(live.runtime.agents)
    assert "deploybot" in launch["enum"]
    get_thread = schema["paths"]["/v1/threads/{thread_id}"]["get"]
    assert get_thread["security"] == [{"HTTPBearer": []}]
    assert {"401", "404", "409"} <= set(get_thread["responses"])
    assert "/healthz" in schema["paths"] and "security" not in schema["paths"]["/healthz"]["get"]


def test_keys_are_checked_before_bodies_and_headers_wrap_every_answer(live: LiveServer) -> None:
    huge = b"x" * (live.services.config.max_body_bytes + 1)
    with live.client(None) as anonymous, live.client("admin") as admin:
        refused = anonymous.post("/v1/threads", content=huge)
        too_large = admin.post("/v1/threads", content=huge)
        missing = admin.get("/v1/threads/th_nope")
        page = anonymous.get("/ui/")
    # Auth runs before the body limit: an anonymous caller learns nothing about limits.
    assert refused.status_code == 401
    assert too_large.status_code == 413
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    for r in (refused, too_large, missing, page):  # the outermost middleware saw them all
        assert r.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "content-security-policy" not in missing.headers


def test_every_router_is_mounted_once(live: LiveServer) -> None:
    paths = ["/v1/threads", "/v1/event-kinds", "/v1/inbox", "/v1/channels", "/v1/schedules"]
    paths += ["/healthz", "/metrics", "/"]
    with live.client("admin") as c:
        answers = {path: c.get(path).status_code for path in paths}
    assert all(status in (200, 307) for status in answers.values()), answers
    methods = [
        (route.path, sorted(route.methods))
        for route in live.app.routes
        if getattr(route, "methods", None)
    ]
    assert len(methods) == len(set(map(str, methods)))
    assert httpx.get(live.url + "/v1/threads").status_code == 401
