"""server/problems.py: every error a route can raise becomes one RFC 9457 problem document
with its documented status, and nothing internal leaks (a FastAPI app with the module's
handlers, under a real uvicorn on loopback)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from server_support import serving
from threadline.errors import (
    ConfigError,
    CorruptEvent,
    InvalidAction,
    NotAllowed,
    StoreError,
    ThreadNotFound,
)
from threadline.server.problems import (
    PROBLEM_HANDLERS,
    ProblemError,
    http_problems,
    problem_bytes,
)
from threadline.stores.base import InvalidCursor

RAISED: dict[str, Exception] = {
    "missing": ThreadNotFound("th_1"),
    "conflict": InvalidAction("call c1 is not awaiting approval"),
    "forbidden": NotAllowed("only alice may approve"),
    "cursor": InvalidCursor("bad cursor"),
    "unserved": ConfigError("agent x is not served here"),
    "store": StoreError("secret-connection-string failed"),
    "bug": RuntimeError("internal detail /srv/app.py line 12"),
    "teapot": ProblemError(418, "Teapot", "short and stout", hint="tip me over"),
}


class _Body(BaseModel):
    n: int


def _app() -> FastAPI:
    app = FastAPI(exception_handlers=dict(PROBLEM_HANDLERS))

    @app.get("/raise/{name}")
    async def raise_(name: str) -> None:
        raise RAISED[name]

    @app.get("/corrupt")
    async def corrupt() -> None:
        raise CorruptEvent("th_9", 4, "not JSON")

    @app.post("/body")
    async def body(b: _Body) -> dict[str, int]:
        return {"n": b.n}

    @app.get("/both")
    async def get_both() -> None: ...

    @app.post("/both")
    async def post_both() -> None: ...

    # As create_app does: the Allow header names every route of the path.
    allow = [(r.path_regex, frozenset(r.methods)) for r in app.routes if isinstance(r, APIRoute)]
    app.exception_handlers[StarletteHTTPException] = http_problems(allow)
    return app


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serving(_app()) as running:
        yield running


@pytest.mark.parametrize(
    ("name", "status", "title"),
    [
        ("missing", 404, "Thread not found"),
        ("conflict", 409, "Action does not fit the thread's state"),
        ("forbidden", 403, "Not allowed"),
        ("cursor", 400, "Invalid cursor"),
        ("unserved", 409, "Not served here"),
        ("teapot", 418, "Teapot"),
    ],
)
def test_each_error_class_maps_to_its_status(url: str, name: str, status: int, title: str) -> None:
    r = httpx.get(f"{url}/raise/{name}")
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["title"] == title and body["status"] == status and body["type"] == "about:blank"
    assert body["detail"] == str(RAISED[name])
    if name == "teapot":
        assert body["hint"] == "tip me over"


def test_unexpected_errors_name_no_internals(url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="threadline.server"):
        store = httpx.get(f"{url}/raise/store")
        bug = httpx.get(f"{url}/raise/bug")
    assert store.status_code == bug.status_code == 500
    assert "secret-connection-string" not in store.text and "StoreError" in store.text
    assert "/srv/app.py" not in bug.text and "RuntimeError" not in bug.text
    assert "internal detail" in caplog.text  # logged on the server, with its traceback


def test_a_damaged_thread_is_a_409_naming_the_row(url: str) -> None:
    r = httpx.get(f"{url}/corrupt")
    assert r.status_code == 409
    body = r.json()
    assert (body["title"], body["thread_id"], body["seq"]) == ("Damaged thread", "th_9", 4)
    assert "left untouched" in body["detail"]


def test_malformed_json_is_400_and_a_wrong_shape_422_with_its_fields(url: str) -> None:
    bad = httpx.post(
        f"{url}/body", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400 and bad.json()["title"] == "Malformed JSON"
    wrong = httpx.post(f"{url}/body", json={"n": "many"})
    assert wrong.status_code == 422
    assert [e["loc"] for e in wrong.json()["errors"]] == [["body", "n"]]


def test_405_and_options_name_every_method_of_the_path(url: str) -> None:
    r = httpx.delete(f"{url}/both")
    assert r.status_code == 405 and r.headers["allow"] == "GET, OPTIONS, POST"
    assert r.headers["content-type"] == "application/problem+json"
    options = httpx.options(f"{url}/both")
    assert options.status_code == 204 and options.headers["allow"] == "GET, OPTIONS, POST"
    assert httpx.get(f"{url}/nowhere").json()["title"] == "Not Found"


def test_problem_bytes_is_the_document_sent_before_any_route() -> None:
    assert problem_bytes(413, "Payload Too Large", "limit 10").startswith(b'{"type": "about:blank"')
