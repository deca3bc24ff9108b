"""Channels (factor 11): the ways into this server, and where new ones mount.

    GET  /v1/channels                          the channels this server answers on

Every channel reaches the same runtime actions (launch, respond, approve) and a thread
answers where it came from. A new channel (Slack, email, cron) adds its inbound routes to
`/v1/channels/<name>` (see `threadline.channels`), verified by its own signature scheme
as `webhooks` is (so exempt from API keys in `auth.required_scope`), and is listed here.
"""

from __future__ import annotations

from fastapi import APIRouter

from ...wire import Channel, ChannelList
from ..deps import Svc
from ..services import Services

__all__ = ["channels", "router"]

router = APIRouter(prefix="/v1/channels", tags=["channels"])


def channels(svc: Services) -> list[Channel]:
    """The channels of a server with these services."""
    return [
        Channel(name="api", path="/v1/threads", enabled=True),
        Channel(
            name="webhook",
            path="/v1/webhooks/inbound",
            enabled=svc.config.webhook_secret is not None,
        ),
        *(
            Channel(name=name, path=f"/v1/channels/{name}", enabled=True)
            for name in sorted(svc.channels)
        ),
    ]


@router.get("", response_model=ChannelList)
async def list_channels(svc: Svc) -> ChannelList:
    """The ways into this server: the API and signed webhooks (more as channels land)."""
    return ChannelList(items=channels(svc))
