"""Errors as RFC 9457 problem documents (`application/problem+json`), never stack traces.

Each Threadline error maps to one status: `ThreadNotFound` 404, `InvalidAction` 409 (the
action does not fit the thread's state; nothing was written), `NotAllowed` 403,
`InvalidCursor` 400, malformed JSON 400, validation 422. Anything unexpected is logged
with its traceback on the server and answered with a 500 that names no internals.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine, Sequence, Set
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    ConfigError,
    CorruptEvent,
    InvalidAction,
    NotAllowed,
    ThreadlineError,
    ThreadNotFound,
)
from ..stores.base import InvalidCursor

__all__ = [
    "PROBLEM_HANDLERS",
    "PROBLEM_RESPONSES",
    "Problem",
    "ProblemError",
    "http_problems",
    "problem_bytes",
    "problem_response",
]

log = logging.getLogger("threadline.server")

PROBLEM_TYPE = "application/problem+json"


class Problem(BaseModel):
    """An error: `title` is the class of problem, `detail` says what to do about it."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None
    """For 422: each invalid field (`loc`, `msg`)."""


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {PROBLEM_TYPE: {}}, "description": text}
    for code, text in [
        (400, "Malformed request"),
        (401, "Missing or invalid API key"),
        (403, "Key lacks the scope, or the caller is not a named approver"),
        (404, "No such thread"),
        (409, "The action does not fit the thread's state; nothing was written"),
        (413, "Request body too large"),
        (422, "Invalid request body or parameters"),
    ]
}


class ProblemError(Exception):
    """Raise in a handler to answer with a problem document."""

    def __init__(self, status: int, title: str, detail: str, **extra: Any) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra
        super().__init__(detail)


def problem_bytes(status: int, title: str, detail: str, **extra: Any) -> bytes:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return json.dumps(body, default=str).encode()


def problem_response(
    status: int, title: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_TYPE, headers=headers)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors()[:20]:
        out.append({"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", ""))})
    return out


async def _problem(_: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, ProblemError):  # pragma: no cover - registered for ProblemError
        raise exc
    return problem_response(exc.status, exc.title, exc.detail, **exc.extra)


Handler = Callable[[Request, Exception], Coroutine[Any, Any, Response]]
RouteMethods = Sequence[tuple[re.Pattern[str], Set[str]]]
"""The app's routes as (path regex, methods) pairs, for the Allow header."""


def http_problems(routes: RouteMethods = ()) -> Handler:
    """The handler of Starlette's HTTP errors (404, 405, ...) as problem documents.

    Starlette's 405 names the methods of the first route matching the path only; with
    `routes` a path served by several routes (GET and POST /v1/threads) allows them all,
    and OPTIONS answers 204 with that Allow header.
    """

    async def handler(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, StarletteHTTPException):  # pragma: no cover
            raise exc
        titles = {404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large"}
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        headers = dict(exc.headers or {})
        if exc.status_code == 405 and routes:
            path = request.scope.get("path", "")
            allowed = {"OPTIONS"}.union(*(m for regex, m in routes if regex.match(path)))
            if request.method == "OPTIONS":
                return Response(status_code=204, headers={"Allow": ", ".join(sorted(allowed))})
            headers["Allow"] = ", ".join(sorted(allowed))
        return problem_response(
            exc.status_code, titles.get(exc.status_code, "Error"), detail, headers=headers
        )

    return handler


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):  # pragma: no cover
        raise exc
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return problem_response(400, "Malformed JSON", "the request body is not valid JSON")
    return problem_response(
        422,
        "Invalid request",
        "the request does not match the schema; see `errors`",
        errors=_validation_errors(exc),
    )


def _mapped(status: int, title: str) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    """A handler answering `status` with the exception's message as the detail."""

    async def handler(_: Request, exc: Exception) -> JSONResponse:
        return problem_response(status, title, str(exc))

    return handler


async def _threadline(_: Request, exc: Exception) -> JSONResponse:
    log.error("request failed: %s: %s", type(exc).__name__, exc)
    return problem_response(
        500,
        "Server error",
        f"{type(exc).__name__}: the server could not complete the "
        "request; nothing was written by it",
    )


async def _corrupt(_: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, CorruptEvent):  # pragma: no cover
        raise exc
    log.error("damaged thread: %s", exc)
    return problem_response(
        409,
        "Damaged thread",
        f"{exc}; the stored rows are left untouched for inspection",
        thread_id=exc.thread_id,
        seq=exc.seq,
    )


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error")
    return problem_response(
        500, "Server error", "an unexpected error occurred; it was logged on the server"
    )


PROBLEM_HANDLERS: dict[int | type[Exception], Callable[[Request, Exception], Any]] = {
    ProblemError: _problem,
    StarletteHTTPException: http_problems(),
    RequestValidationError: _invalid,
    ThreadNotFound: _mapped(404, "Thread not found"),
    InvalidAction: _mapped(409, "Action does not fit the thread's state"),
    NotAllowed: _mapped(403, "Not allowed"),
    InvalidCursor: _mapped(400, "Invalid cursor"),
    ConfigError: _mapped(409, "Not served here"),
    CorruptEvent: _corrupt,
    ThreadlineError: _threadline,
    Exception: _unexpected,
}
"""Every error the app can raise, as a problem document (`FastAPI(exception_handlers=...)`).
The most specific class wins, so `ThreadNotFound` is a 404 though it is a ThreadlineError."""
