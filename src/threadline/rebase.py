"""What a step in flight may be re-based over when its append conflicts.

An advancer's step (a model call, a tool run) takes time; meanwhile others may append to
the thread. Events from outside (a person's action, a trigger) are safe to re-base over,
and so is a `failed` end written by someone else (an operator's cancel, a worker giving up
on the thread): a running tool's outcome is still recorded after it. What follows such an
end (a resume, and whatever the resumed thread's next advancer wrote) belongs to a new run,
not to the one in flight: the model's answer decided before the end is not written after
it, and the advance that was cut short ends (`Runtime.advance_only`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .events import Event, Failed, Status, Thread
from .pipeline import Refused
from .stores.base import Store

__all__ = ["advanced_meanwhile", "ended_meanwhile", "reload_refused", "still_decided"]


def advanced_meanwhile(events: Sequence[Event]) -> bool:
    """Whether `events`, which landed while a step was in flight, hold another advancer's
    step: two processes advancing the thread at once, whose step re-basing would record
    twice. Events from outside do not, nor does a `failed` end written by someone else, nor
    anything after that end (the thread was resumed and advanced anew): the step is
    re-based over them, its `still_valid` deciding."""
    for event in events:
        if type(event) is Failed:
            return False
        if event.traits.origin != "outside":
            return True
    return False


def ended_meanwhile(events: Sequence[Event]) -> bool:
    """Whether `events`, which landed while a step was in flight, ended the thread: a
    `failed` written by someone else (an advancer never writes one), resumed since or not."""
    return any(type(event) is Failed for event in events)


def still_decided(seq: int) -> Callable[[Thread], bool]:
    """Whether a model's answer, asked for when the thread's next seq was `seq`, may still
    be written once re-based: the thread has not ended, and was not ended meanwhile. An
    answer decided before a cancel is no decision after a resume: the resumed thread's
    model decides again from the log."""
    return lambda thread: (
        thread.status not in (Status.DONE, Status.FAILED)
        and not ended_meanwhile(thread.events[seq:])
    )


async def reload_refused(store: Store, thread: Thread, refused: Refused) -> Thread:
    """An append queued behind a commit was refused (`Refused`): `thread` is cut back to
    before it. What landed meanwhile is loaded and decided on again, if it came from outside
    (a human action, a cancel); from another advancer, the conflict is raised, as
    `Runtime._append_rebased` does."""
    expected = len(thread)
    thread = await store.load(thread.id)
    if advanced_meanwhile(thread.events[expected:]):
        raise refused.conflict from None
    return thread
