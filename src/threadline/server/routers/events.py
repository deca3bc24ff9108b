"""What a client needs to show events it has never seen: every kind, with its label.

    GET  /v1/event-kinds                 each event kind's label, origin, role, error flag

The labels are the event classes' own declarations (`traits`), so the web page shows (and
styles, by origin and role) a new kind correctly without a line of JavaScript or CSS
naming it.
"""

from __future__ import annotations

from functools import cache

from fastapi import APIRouter

from ...events import EVENT_CLASSES
from ...wire import EventKind, EventKinds

__all__ = ["event_kinds", "router"]

router = APIRouter(prefix="/v1", tags=["events"])


@cache
def event_kinds() -> EventKinds:
    """Every event class's kind and traits, in declaration order."""
    return EventKinds(
        items=[
            EventKind(
                kind=str(cls.model_fields["kind"].default),
                label=cls.traits.label,
                origin=cls.traits.origin,
                error=cls.traits.error,
                role=cls.traits.role,
            )
            for cls in EVENT_CLASSES
        ]
    )


@router.get("/event-kinds", response_model=EventKinds)
async def list_event_kinds() -> EventKinds:
    """Each kind of event with the label to show it by."""
    return event_kinds()
