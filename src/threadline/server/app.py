"""The HTTP API: a thin adapter over `Runtime` (factors 6, 7 and 11).

Every route loads what it needs from the store, asks the runtime to act (the runtime checks
that the action fits the thread's state and appends optimistically, so two racing approvals
cannot both win), and kicks the background runner for any thread the action made runnable.
Nothing is cached between requests: any number of servers and workers can share one store.

Routes (all under /v1 need an API key, see `auth.py`; the inbound webhook is verified by
its HMAC signature instead):

    POST /v1/threads                           launch {agent, message, metadata?, wait?}
    GET  /v1/threads?status=&agent=&limit=&cursor=
    GET  /v1/threads/{id}
    GET  /v1/threads/{id}/events?after=SEQ     (Accept: text/event-stream streams instead)
    GET  /v1/threads/{id}/events/stream        Server-Sent Events, live
    POST /v1/threads/{id}/approvals/{call_id}  {approved, comment?, edited_arguments?}
    POST /v1/threads/{id}/responses            {request_id, text}
    POST /v1/threads/{id}/messages             {text}
    POST /v1/threads/{id}/pause | /resume | /fork {at}
    POST /v1/webhooks/inbound                  signed approval or answer
    GET  /healthz, /readyz;  /ui/ the approvals inbox
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, StreamingResponse
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError

from ..events import Event, Status, utcnow
from ..runtime import Runtime
from .auth import LOCAL, AuthMiddleware, Principal
from .problems import PROBLEM_RESPONSES, ProblemError, install_problem_handlers, problem_bytes
from .runner import ThreadRunner
from .schemas import (
    ApprovalBody,
    ForkBody,
    LaunchBody,
    MessageBody,
    PauseBody,
    ResponseBody,
    ThreadListItem,
    ThreadOut,
    ThreadPage,
    WebhookDelivery,
    thread_out,
)
from .sse import ChangeFeed, event_stream, wait_until_settled
from .webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, Notifier, WebhookRejected, verify

__all__ = ["Lifecycle", "ServerConfig", "create_app"]

log = logging.getLogger("threadline.server")

UI_DIR = Path(__file__).parent / "ui"

ThreadId = Annotated[str, PathParam(min_length=1, max_length=200)]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class ServerConfig:
    """How the app behaves; built by `threadline serve` from flags and settings.

    Attributes:
        auth: require API keys on /v1 (only `threadline serve --no-auth` on loopback
            turns this off).
        worker: advance threads in this process; False for an API-only server whose
            threads are advanced by workers leasing from the same store.
        webhook_secret: HMAC secret for inbound webhooks and outbound notifications; inbound
            webhooks are refused while it is unset.
        notify_url: POST a signed notification here for each pending approval / question.
        public_url: this server's base URL, as notifications tell people to respond to.
        max_body_bytes: larger request bodies get a 413 before anything parses them.
        poll_interval: how often streams and waits re-read the store for appends made by
            other processes (appends made here wake them at once).
        drain_timeout: on shutdown, seconds to let running steps finish.
        close_store: close the runtime's store when the app shuts down.
    """

    auth: bool = True
    worker: bool = True
    webhook_secret: str | None = None
    notify_url: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    max_body_bytes: int = 1 << 20
    webhook_tolerance: float = 300.0
    poll_interval: float = 1.0
    drain_timeout: float = 30.0
    concurrency: int = 32
    close_store: bool = True


class Lifecycle:
    """Shutdown state. `begin_shutdown` only flips flags, so a signal handler may call it."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.closing = False

    def begin_shutdown(self) -> None:
        """Stop taking work: new launches get 503, loops stop after their current step,
        streams end."""
        self.closing = True
        self.runtime.stop()


class EventPage(BaseModel):
    events: list[Event]
    next_after: int
    """Pass as `after` to get the events that follow."""


class Health(BaseModel):
    status: str


def create_app(runtime: Runtime, config: ServerConfig | None = None) -> FastAPI:
    """The ASGI app serving `runtime`. The app adds its observers to `runtime.observers`."""
    config = config or ServerConfig()
    store = runtime.store
    feed = ChangeFeed()
    runner = ThreadRunner(runtime, enabled=config.worker, concurrency=config.concurrency)
    lifecycle = Lifecycle(runtime)
    notifier = None
    runtime.observers.append(feed)
    if config.notify_url:
        if not config.webhook_secret:
            from ..errors import ConfigError

            raise ConfigError("notifications are signed: set THREADLINE_WEBHOOK_SECRET too")
        notifier = Notifier(config.notify_url, config.webhook_secret, config.public_url)
        runtime.observers.append(notifier)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        resumed = await runner.resume_running()
        if resumed:
            log.info("resuming %d thread(s) left running by a previous process", resumed)
        try:
            yield
        finally:
            lifecycle.begin_shutdown()
            feed.wake_all()
            if not await runner.drain(config.drain_timeout):
                log.warning(
                    "shutdown: some steps did not finish in %.0fs; their threads "
                    "resume from the last checkpoint",
                    config.drain_timeout,
                )
            if notifier is not None:
                await notifier.aclose()
            if config.close_store:
                await store.close()

    app = FastAPI(
        title="Threadline",
        version="1",
        summary="Launch, inspect, pause, resume and answer LLM agent threads.",
        lifespan=lifespan,
        responses={500: {"model": None, "description": "Server error (problem document)"}},
    )
    app.state.runtime = runtime
    app.state.runner = runner
    app.state.lifecycle = lifecycle
    app.state.feed = feed
    app.state.notifier = notifier
    install_problem_handlers(app)

    def closing() -> bool:
        return lifecycle.closing

    def who(request: Request) -> Principal:
        found = request.scope.get("state", {}).get("principal")
        return found if isinstance(found, Principal) else LOCAL

    bearer = HTTPBearer(auto_error=False, description="An API key: `threadline keys create`")
    v1 = APIRouter(prefix="/v1", dependencies=[Security(bearer)], responses=PROBLEM_RESPONSES)

    @v1.post("/threads", status_code=201, response_model=ThreadOut, tags=["threads"])
    async def launch(body: LaunchBody, request: Request) -> ThreadOut:
        """Start a thread. Returns at once (status `running`), or with `wait` once it stops
        running (paused, awaiting someone, ended) or `wait_timeout` passes."""
        if lifecycle.closing:
            raise ProblemError(503, "Shutting down", "this server is stopping; retry shortly")
        if body.agent not in runtime.agents:
            served = ", ".join(sorted(runtime.agents)) or "none"
            raise ProblemError(
                422, "Unknown agent", f"no agent named {body.agent!r}; this server serves: {served}"
            )
        thread = await runtime.launch(
            body.agent,
            body.message,
            sender=who(request).name,
            metadata=body.metadata,
            advance=False,
        )
        runner.kick(thread.id)
        if body.wait:
            await wait_until_settled(
                store,
                feed,
                thread.id,
                within=body.wait_timeout,
                poll=config.poll_interval,
                closing=closing,
            )
            thread = await store.load(thread.id)
        return thread_out(thread)

    @v1.get("/threads", response_model=ThreadPage, tags=["threads"])
    async def list_threads(
        status: Status | None = None,
        agent: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=400, pattern=r"^[A-Za-z0-9_-]*$")] = None,
    ) -> ThreadPage:
        """Threads newest first; pass the returned `cursor` back for the next page."""
        page = await store.list(status=status, agent=agent, limit=limit, cursor=cursor)
        return ThreadPage(
            items=[
                ThreadListItem(
                    id=s.id,
                    agent=s.agent,
                    status=s.status,
                    next_seq=s.next_seq,
                    created_at=s.created_at,
                    updated_at=s.updated_at,
                    metadata=s.metadata,
                )
                for s in page.items
            ],
            cursor=page.cursor,
        )

    @v1.get("/threads/{thread_id}", response_model=ThreadOut, tags=["threads"])
    async def get_thread(thread_id: ThreadId) -> ThreadOut:
        """The thread's derived state: status, pending approvals, open question, usage."""
        return thread_out(await store.load(thread_id))

    def stream_response(thread_id: str, after: int) -> StreamingResponse:
        return StreamingResponse(
            event_stream(store, feed, thread_id, after, poll=config.poll_interval, closing=closing),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @v1.get(
        "/threads/{thread_id}/events",
        response_model=EventPage,
        tags=["events"],
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def list_events(
        thread_id: ThreadId,
        request: Request,
        after: Annotated[int, Query(ge=-1, le=10_000_000)] = -1,
        limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    ) -> Any:
        """Events with seq > `after`, oldest first. With `Accept: text/event-stream`, the
        same as `/events/stream`."""
        if "text/event-stream" in request.headers.get("accept", ""):
            await store.get(thread_id)
            return stream_response(thread_id, after)
        events = await store.events(thread_id, after=after, limit=limit)
        return EventPage(events=events, next_after=events[-1].seq if events else after)

    @v1.get(
        "/threads/{thread_id}/events/stream",
        tags=["events"],
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": "SSE: `id` is the seq, `event` the kind, `data` the event as JSON",
            }
        },
    )
    async def stream_events(
        thread_id: ThreadId,
        after: Annotated[int, Query(ge=-1, le=10_000_000)] = -1,
        last_event_id: Annotated[str | None, Header(max_length=20)] = None,
    ) -> StreamingResponse:
        """Every event after `after` (or `Last-Event-ID`), then new ones live."""
        await store.get(thread_id)
        if last_event_id is not None and last_event_id.strip().lstrip("-").isdigit():
            after = max(after, int(last_event_id))
        return stream_response(thread_id, after)

    @v1.post("/threads/{thread_id}/approvals/{call_id}", response_model=ThreadOut, tags=["humans"])
    async def approve(
        thread_id: ThreadId,
        call_id: Annotated[str, PathParam(min_length=1, max_length=200)],
        body: ApprovalBody,
        request: Request,
    ) -> ThreadOut:
        """Approve (maybe with edited arguments) or reject a pending call. A rejection's
        comment is shown to the model. 409 if the call is not awaiting approval."""
        thread = await runtime.approve(
            thread_id,
            call_id,
            approved=body.approved,
            comment=body.comment,
            edited_arguments=body.edited_arguments,
            by=who(request).name,
            channel="api",
        )
        runner.kick(thread_id)
        return thread_out(thread)

    @v1.post("/threads/{thread_id}/responses", response_model=ThreadOut, tags=["humans"])
    async def respond(thread_id: ThreadId, body: ResponseBody, request: Request) -> ThreadOut:
        """Answer the thread's open question. 409 if it asked nothing (or something else)."""
        thread = await runtime.respond(
            thread_id, body.request_id, body.text, by=who(request).name, channel="api"
        )
        runner.kick(thread_id)
        return thread_out(thread)

    @v1.post("/threads/{thread_id}/messages", response_model=ThreadOut, tags=["humans"])
    async def message(thread_id: ThreadId, body: MessageBody, request: Request) -> ThreadOut:
        """A new user message to a finished, escalated, waiting or question-asking thread."""
        thread = await runtime.message(
            thread_id, body.text, sender=who(request).name, channel="api", metadata=body.metadata
        )
        runner.kick(thread_id)
        return thread_out(thread)

    @v1.post("/threads/{thread_id}/pause", response_model=ThreadOut, tags=["lifecycle"])
    async def pause(
        thread_id: ThreadId, request: Request, body: PauseBody | None = None
    ) -> ThreadOut:
        """Pause: the thread stops after its current step until resumed."""
        thread = await runtime.pause(
            thread_id, by=who(request).name, reason=body.reason if body else None
        )
        return thread_out(thread)

    @v1.post("/threads/{thread_id}/resume", response_model=ThreadOut, tags=["lifecycle"])
    async def resume(thread_id: ThreadId, request: Request) -> ThreadOut:
        """Resume a paused or escalated thread."""
        thread = await runtime.resume(thread_id, by=who(request).name)
        runner.kick(thread_id)
        return thread_out(thread)

    @v1.post(
        "/threads/{thread_id}/fork", status_code=201, response_model=ThreadOut, tags=["lifecycle"]
    )
    async def fork(thread_id: ThreadId, body: ForkBody) -> ThreadOut:
        """A new thread holding events 0..`at` of this one (then advanced if runnable)."""
        forked = await runtime.fork(thread_id, at=body.at)
        if forked.status == Status.RUNNING:
            runner.kick(forked.id)
        return thread_out(forked)

    @v1.post(
        "/webhooks/inbound",
        response_model=ThreadOut,
        tags=["humans"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": WebhookDelivery.model_json_schema()}},
            },
            "parameters": [
                {
                    "name": TIMESTAMP_HEADER,
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "unix seconds",
                },
                {
                    "name": SIGNATURE_HEADER,
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": 'sha256=hex(HMAC-SHA256(secret, timestamp + "." + body))',
                },
            ],
        },
    )
    async def inbound_webhook(request: Request) -> ThreadOut:
        """A human's verdict or answer relayed by another system, signed with the shared
        secret (no API key). Stale (over 5 minutes) and replayed deliveries are refused."""
        if not config.webhook_secret:
            raise ProblemError(
                403,
                "Webhooks disabled",
                "inbound webhooks need THREADLINE_WEBHOOK_SECRET on the server",
            )
        raw = await request.body()
        try:
            signature = verify(
                config.webhook_secret, request.headers, raw, tolerance=config.webhook_tolerance
            )
        except WebhookRejected as exc:
            raise ProblemError(401, "Webhook rejected", exc.reason) from None
        try:
            delivery = WebhookDelivery.model_validate_json(raw)
        except ValidationError as exc:
            raise ProblemError(422, "Invalid delivery", _first_error(exc)) from None
        if delivery.type == "approval" and (delivery.call_id is None or delivery.approved is None):
            raise ProblemError(422, "Invalid delivery", "an approval needs call_id and approved")
        if delivery.type == "response" and (delivery.request_id is None or not delivery.text):
            raise ProblemError(422, "Invalid delivery", "a response needs request_id and text")
        if not await store.remember_delivery(
            f"webhook:{delivery.delivery_id or signature}", at=utcnow()
        ):
            raise ProblemError(
                409,
                "Replayed delivery",
                "this delivery was already received; it is not applied twice",
            )
        if delivery.type == "approval":
            thread = await runtime.approve(
                delivery.thread_id,
                delivery.call_id or "",
                approved=bool(delivery.approved),
                comment=delivery.comment,
                edited_arguments=delivery.edited_arguments,
                by=delivery.by,
                channel="webhook",
            )
        else:
            thread = await runtime.respond(
                delivery.thread_id,
                delivery.request_id or "",
                delivery.text or "",
                by=delivery.by,
                channel="webhook",
            )
        runner.kick(delivery.thread_id)
        return thread_out(thread)

    app.include_router(v1)

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz() -> Health:
        """The process is up."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        tags=["ops"],
        responses={503: {"description": "Not ready (problem document)"}},
    )
    async def readyz() -> Health:
        """Ready when the store answers and the server is not shutting down."""
        if lifecycle.closing:
            raise ProblemError(503, "Shutting down", "this server is stopping")
        try:
            await store.ping()
        except Exception as exc:
            raise ProblemError(
                503, "Store unavailable", f"the store did not answer: {type(exc).__name__}"
            ) from None
        return Health(status="ready")

    @app.get("/", include_in_schema=False)
    async def index() -> RedirectResponse:
        return RedirectResponse("/ui/")

    app.mount("/ui", StaticFiles(directory=UI_DIR, html=True), name="ui")

    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """The generated schema, plus the names of the agents this server serves."""
        schema = base_openapi()
        launch_body = schema.get("components", {}).get("schemas", {}).get("LaunchBody", {})
        if "agent" in launch_body.get("properties", {}):
            launch_body["properties"]["agent"]["enum"] = sorted(runtime.agents)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

    # Outermost last: headers wrap everything; keys are checked before bodies are read.
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    app.add_middleware(AuthMiddleware, store=store, enabled=config.auth)
    app.add_middleware(SecurityHeadersMiddleware)
    return app


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return "the body is not valid JSON"
    loc = ".".join(str(p) for p in first.get("loc", ()))
    return f"{loc}: {first.get('msg')}" if loc else str(first.get("msg"))


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` with 413, before any parsing.

    The body is read (at most `max_bytes`) and handed on whole, so a chunked upload that
    lies about its size is cut off too.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit():
                    await _send_problem(send, 400, "Bad Content-Length", "not a number")
                    return
                if int(value) > self.max_bytes:
                    await self._too_large(send)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await _send_problem(
            send, 413, "Payload Too Large", f"request bodies are limited to {self.max_bytes} bytes"
        )


async def _send_problem(send: Send, status: int, title: str, detail: str) -> None:
    body = problem_bytes(status, title, detail)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


_UI_CSP = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


class SecurityHeadersMiddleware:
    """nosniff everywhere; a strict Content-Security-Policy on the web page."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_ui = scope["path"].startswith("/ui")

        async def with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                if is_ui:
                    headers += [
                        (b"content-security-policy", _UI_CSP),
                        (b"referrer-policy", b"no-referrer"),
                        (b"x-frame-options", b"DENY"),
                    ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
