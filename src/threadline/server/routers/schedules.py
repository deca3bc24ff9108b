"""Schedules: cron ticks that launch threads (`threadline.schedules`).

    GET    /v1/schedules                       every schedule, with next tick and last firing
    POST   /v1/schedules                       add {name, cron, agent, message, timezone?,
                                               missed?, to?}
    GET    /v1/schedules/{name}
    DELETE /v1/schedules/{name}                remove (its threads stay)
    POST   /v1/schedules/{name}/pause | /resume

Reading needs the `read` scope; everything else `admin` (a schedule launches threads on
its own, forever: adding one is an operator's act, see `auth.required_scope`). The ticks
are fired by every worker and every server that advances threads, exactly once per tick.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response
from fastapi import Path as PathParam

from ...errors import ConfigError, StoreError
from ...schedules import schedule_from, view_of
from ...stores import ScheduleStore, schedule_store
from ...stores.schedules import Schedule
from ...wire import ScheduleBody, ScheduleList, ScheduleOut
from ..deps import Svc
from ..problems import ProblemError
from ..services import Services

__all__ = ["router"]

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])

Name = Annotated[str, PathParam(min_length=1, max_length=100)]


def _schedules(svc: Services) -> ScheduleStore:
    try:
        return schedule_store(svc.store)
    except StoreError as exc:
        raise ProblemError(501, "No schedules", str(exc)) from None


async def _found(schedules: ScheduleStore, name: str) -> Schedule:
    found = await schedules.get(name)
    if found is None:
        raise ProblemError(404, "Not found", f"no schedule named {name!r}")
    return found


@router.get("", response_model=ScheduleList)
async def list_schedules(svc: Svc) -> ScheduleList:
    """Every schedule, by name."""
    schedules = _schedules(svc)
    now = svc.runtime.clock()
    return ScheduleList(
        items=[await view_of(schedules, s, now=now) for s in await schedules.list()]
    )


@router.post("", status_code=201, response_model=ScheduleOut)
async def add_schedule(body: ScheduleBody, svc: Svc) -> ScheduleOut:
    """Add a schedule; its first tick is the first one after now."""
    schedules = _schedules(svc)
    if svc.config.worker and body.agent not in svc.runtime.agents:
        served = ", ".join(sorted(svc.runtime.agents)) or "none"
        raise ProblemError(
            422, "Unknown agent", f"no agent named {body.agent!r}; this server serves: {served}"
        )
    try:
        schedule = schedule_from(body, now=svc.runtime.clock())
    except ConfigError as exc:
        raise ProblemError(422, "Invalid schedule", str(exc)) from None
    try:
        await schedules.add(schedule)
    except StoreError as exc:
        raise ProblemError(409, "Schedule exists", str(exc)) from None
    return await view_of(schedules, schedule, now=svc.runtime.clock())


@router.get("/{name}", response_model=ScheduleOut)
async def get_schedule(name: Name, svc: Svc) -> ScheduleOut:
    schedules = _schedules(svc)
    return await view_of(schedules, await _found(schedules, name), now=svc.runtime.clock())


@router.delete("/{name}", status_code=204)
async def remove_schedule(name: Name, svc: Svc) -> Response:
    """Remove a schedule and its firing records; the threads it launched stay."""
    if not await _schedules(svc).remove(name):
        raise ProblemError(404, "Not found", f"no schedule named {name!r}")
    return Response(status_code=204)


@router.post("/{name}/pause", response_model=ScheduleOut)
async def pause_schedule(name: Name, svc: Svc) -> ScheduleOut:
    """Stop firing (idempotent)."""
    return await _set_paused(svc, name, True)


@router.post("/{name}/resume", response_model=ScheduleOut)
async def resume_schedule(name: Name, svc: Svc) -> ScheduleOut:
    """Fire again from the next tick; ticks that passed while paused never fire."""
    return await _set_paused(svc, name, False)


async def _set_paused(svc: Services, name: str, paused: bool) -> ScheduleOut:
    schedules = _schedules(svc)
    now = svc.runtime.clock()
    await schedules.set_paused(name, paused, at=now)
    return await view_of(schedules, await _found(schedules, name), now=now)
