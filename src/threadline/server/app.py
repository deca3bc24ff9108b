"""The HTTP API: a thin adapter over `Runtime` (factors 6, 7 and 11), assembled declaratively.

The app is its list of routers, its middleware and its lifespan, over one `Services` object
built at start-up (see `services.py`). Each router is one concern:

    routers/threads.py    launch, list, get, events (and the live stream), pause, resume, fork
    routers/events.py     the event kinds and their labels (declared by the event classes)
    routers/humans.py     the inbox, approvals, answers, messages
    routers/webhooks.py   signed inbound deliveries (no API key)
    routers/channels.py   the channel list; each channel's own routes mount under
                          /v1/channels/<name> (`threadline.channels`)
    routers/schedules.py  cron schedules that launch threads
    routers/health.py     /healthz, /readyz
    routers/metrics.py    /metrics (Prometheus; no API key unless metrics_auth)
    routers/ui.py         / and the web page under /ui/

All routes under /v1 need an API key (`auth.py`), except webhooks and channels that verify
their own signatures. Nothing is cached between requests: any number of servers and
workers can share one store.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware

from .auth import AuthMiddleware
from .deps import bearer
from .middleware import BodyLimitMiddleware, SecurityHeadersMiddleware, TraceContextMiddleware
from .problems import PROBLEM_HANDLERS, PROBLEM_RESPONSES, http_problems
from .routers import (
    channels,
    events,
    health,
    humans,
    metrics,
    schedules,
    threads,
    ui,
    webhooks,
)
from .services import Services

__all__ = ["create_app"]

API_ROUTERS = (
    threads.router,
    events.router,
    humans.router,
    webhooks.router,
    channels.router,
    schedules.router,
)
"""Under /v1: documented with the problem responses and the bearer scheme."""


def create_app(services: Services) -> FastAPI:
    """The ASGI app serving `services.runtime` (its lifespan is the services' lifespan)."""
    config = services.config
    routers = [*API_ROUTERS, health.router, metrics.router, ui.router]
    allow = [
        (route.path_regex, frozenset(route.methods or ()))
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
    ]
    app = FastAPI(
        title="Threadline",
        version="1",
        summary="Launch, inspect, pause, resume and answer LLM agent threads.",
        lifespan=services.lifespan,
        routes=[ui.static],
        # Outermost first: headers wrap everything; keys are checked before bodies are read.
        middleware=[
            Middleware(SecurityHeadersMiddleware),
            Middleware(TraceContextMiddleware),
            Middleware(AuthMiddleware, keys=services.keys, enabled=config.auth),
            Middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes),
        ],
        # The 405/OPTIONS Allow header names every route of the path.
        exception_handlers={**PROBLEM_HANDLERS, StarletteHTTPException: http_problems(allow)},
        responses={500: {"model": None, "description": "Server error (problem document)"}},
    )
    app.state.services = services  # read by `deps.services`, the routes' one dependency
    for router in API_ROUTERS:
        app.include_router(router, dependencies=[bearer], responses=PROBLEM_RESPONSES)
    for name, channel in services.channels.items():
        inbound = channel.router(services.hub_or_fail())
        if inbound is not None:  # verified by the channel's own signatures, not API keys
            app.include_router(inbound, prefix=f"/v1/channels/{name}", tags=["channels"])
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(ui.router)
    app.openapi = lambda: _openapi(app, services)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI, services: Services) -> dict[str, Any]:
    """The generated schema, plus the names of the agents this server serves."""
    if app.openapi_schema is None:
        schema: dict[str, Any] = FastAPI.openapi(app)  # generates and caches it
        schemas = schema.get("components", {}).get("schemas", {})
        launch = schemas.get("LaunchBody", {}).get("properties", {})
        if "agent" in launch:
            launch["agent"]["enum"] = sorted(services.runtime.agents)
    return app.openapi_schema or {}
