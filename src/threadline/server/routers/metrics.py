"""Prometheus metrics (no API key unless `ServerConfig.metrics_auth`).

GET  /metrics     the text exposition of this process's counters and histograms

Prometheus scrapes without credentials by default, so /metrics is open unless
`THREADLINE_METRICS_AUTH=1`; then it needs a key with the `read` scope, like GET /v1 routes.
It reveals agent, model and tool names and counts, never thread content.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from ...observability.metrics import CONTENT_TYPE
from ..auth import hash_secret
from ..deps import Svc
from ..problems import ProblemError

__all__ = ["router"]

router = APIRouter(tags=["ops"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request, svc: Svc) -> Response:
    """This process's metrics in the Prometheus text format."""
    if svc.metrics is None:
        raise ProblemError(404, "Not Found", "metrics are turned off on this server")
    if svc.config.metrics_auth and svc.config.auth:
        await _check_key(request, svc)
    await svc.metrics.refresh(svc.store)
    return Response(svc.metrics.render(), media_type=CONTENT_TYPE)


async def _check_key(request: Request, svc: Svc) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    key = None
    if scheme.lower() == "bearer" and token.startswith("tl_") and len(token) <= 200:
        key = await svc.keys.find(hash_secret(token))
    if key is None or key.revoked_at is not None:
        raise ProblemError(401, "Unauthorized", "send an API key with the 'read' scope")
    if "read" not in key.scopes and "admin" not in key.scopes:
        raise ProblemError(403, "Forbidden", f"key {key.id} lacks the 'read' scope")
