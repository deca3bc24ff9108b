"""Channels (factor 11): the ways into this server, and where new ones mount.

    GET  /v1/channels                          the channels this server answers on, the
                                               cron schedules and the webhook triggers

Every channel reaches the same runtime actions (launch, respond, approve) and a thread
answers where it came from. A new channel (Slack, email, cron) adds its inbound routes to
`/v1/channels/<name>` (see `threadline.channels`), verified by its own signature scheme
as `webhooks` is (so exempt from API keys in `auth.required_scope`), and is listed here.
Schedules and triggers start threads on their own; each is listed with its status and
where its threads answer (`to`, a routing target).
"""

from __future__ import annotations

from fastapi import APIRouter

from ...errors import StoreError
from ...schedules import next_tick
from ...stores import schedule_store
from ...wire import Channel, ChannelList, ScheduleChannel
from ..deps import Svc
from ..services import Services
from ..triggers import trigger_view

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


async def schedules(svc: Services) -> list[ScheduleChannel]:
    """The cron schedules beside the server's store (none if it keeps none)."""
    try:
        stored = await schedule_store(svc.store).list()
    except StoreError:
        return []
    now = svc.runtime.clock()
    return [
        ScheduleChannel(
            name=s.name,
            agent=s.agent,
            status="paused" if s.paused else "active",
            cron=s.cron,
            timezone=s.timezone,
            next_tick=None if s.paused else next_tick(s, max(now, s.fired_through)),
            to=s.destination,
        )
        for s in stored
    ]


@router.get("", response_model=ChannelList)
async def list_channels(svc: Svc) -> ChannelList:
    """The ways into this server: the API, signed webhooks, the channels it runs, and the
    schedules and triggers that start threads on their own."""
    return ChannelList(
        items=channels(svc),
        schedules=await schedules(svc),
        triggers=[trigger_view(t) for t in svc.config.triggers],
    )
