"""The web page: the approvals inbox and thread timelines (static files under /ui/).

    GET  /            redirects to /ui/
    GET  /favicon.ico redirects to /ui/favicon.svg
    GET  /ui/...      index.html, app.js, style.css, favicon.svg (a strict CSP, see
                      middleware.py)

The page is plain JavaScript against the same /v1 API as every other client.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import Mount

__all__ = ["UI_DIR", "router", "static"]

UI_DIR = Path(__file__).resolve().parent.parent / "ui"

router = APIRouter(include_in_schema=False)

static = Mount("/ui", StaticFiles(directory=UI_DIR, html=True), name="ui")
"""The page's files; a route of its own, listed in the app's declaration."""


@router.get("/")
async def index() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/favicon.ico")
async def favicon() -> RedirectResponse:
    return RedirectResponse("/ui/favicon.svg")
