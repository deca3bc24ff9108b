"""The dependencies routes declare: the services, the caller, path parameters.

`create_app` stores the one `Services` object as `app.state.services`; `services()` is the
only reader. Routes ask for it by type (`Svc`), never reach for globals.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi import Path as PathParam
from fastapi.security import HTTPBearer

from .auth import LOCAL, Principal
from .services import Services

__all__ = [
    "CHANNEL_HEADER",
    "CallId",
    "Caller",
    "Svc",
    "ThreadId",
    "Via",
    "bearer",
    "caller",
    "channel",
    "services",
]

bearer = Security(HTTPBearer(auto_error=False, description="An API key: `threadline keys create`"))
"""Declares the key scheme in the OpenAPI document; `AuthMiddleware` does the checking."""


def services(request: Request) -> Services:
    """The services the app was built with."""
    found: Services = request.app.state.services
    return found


def caller(request: Request) -> Principal:
    """Who is calling, as `AuthMiddleware` established (the local user when auth is off)."""
    found = request.scope.get("state", {}).get("principal")
    return found if isinstance(found, Principal) else LOCAL


CHANNEL_HEADER = "X-Threadline-Channel"
"""Sent as `ui` by the web page, so what people do there is recorded with channel `ui`."""


def channel(request: Request) -> str:
    """The channel a person's action is recorded under: `ui` when the web page says so
    (`X-Threadline-Channel: ui`), else `api`. Any other value is `api`: a header cannot
    make an action claim to come from Slack or email, whose channels verify their own."""
    return "ui" if request.headers.get(CHANNEL_HEADER, "").lower() == "ui" else "api"


Svc = Annotated[Services, Depends(services)]
Via = Annotated[str, Depends(channel)]
Caller = Annotated[Principal, Depends(caller)]
ThreadId = Annotated[str, PathParam(min_length=1, max_length=200)]
CallId = Annotated[str, PathParam(min_length=1, max_length=200)]
