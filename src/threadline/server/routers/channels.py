"""Channels (factor 11): where Slack, email, cron and other inbound channels mount.

Mounted at `/v1/channels` and empty for now. A channel adds its routes here (verified by
its own signature scheme, like `webhooks`), turns what arrives into `Runtime.launch`,
`respond` or `approve` calls through the services, and answers where the thread came from.
"""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter(prefix="/v1/channels", tags=["channels"])
