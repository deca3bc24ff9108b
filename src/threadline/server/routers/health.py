"""Probes for orchestrators: liveness and readiness (no API key).

GET  /healthz     the process is up
GET  /readyz      the store answers and the server is not shutting down (else 503)
"""

from __future__ import annotations

from fastapi import APIRouter

from ...wire import Health
from ..deps import Svc
from ..problems import ProblemError

__all__ = ["router"]

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"description": "Not ready (problem document)"}},
)
async def readyz(svc: Svc) -> Health:
    """Ready when the store answers and the server is not shutting down."""
    if svc.closing():
        raise ProblemError(503, "Shutting down", "this server is stopping")
    try:
        await svc.store.ping()
    except Exception as exc:
        raise ProblemError(
            503, "Store unavailable", f"the store did not answer: {type(exc).__name__}"
        ) from None
    return Health(status="ready")
