"""Human actions on a thread (factor 7): approve, respond, message, pause, resume, external
events, fork and replay, each checked against the thread's derived state.

`HumanActions` is a base of `threadline.runtime.Runtime`; it only needs the store, the clock,
the agents and the runtime's checkpointed append. It also holds the two ways an append is
tried again after a conflict: `_act` for a person's action (re-checked against the new
state), `_append_rebased` for the runtime's own events (re-based over events from outside).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from pydantic import ValidationError

from .agent import Agent
from .budgets import raised
from .context.prefetch import prefetch_events
from .errors import (
    AppendConflict,
    InvalidAction,
    NotAllowed,
)
from .events import (
    Approval,
    Budget,
    Event,
    ExternalEvent,
    Failed,
    ForkedFrom,
    HumanRequest,
    HumanResponse,
    Paused,
    PendingCall,
    RespondedInstead,
    Resumed,
    Status,
    Thread,
    WaitTimedOut,
)
from .launch import user_message
from .rebase import advanced_meanwhile
from .stores.base import Lease, Store, new_thread_id
from .tools import compact_validation_error

__all__ = ["HumanActions", "Verdict", "VerdictOptions"]


_MAX_REBASE = 5
"""How many times a conflicting append is re-checked against the new tail before giving up."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """A human's verdict on one pending call (`Runtime.approve_many` takes a list).

    Attributes:
        call_id: the call awaiting approval.
        approved: run it (True) or not.
        comment: shown to the model; say why, with a rejection.
        edited_arguments: run with these arguments instead (validated by the tool).
    """

    call_id: str
    approved: bool = True
    comment: str | None = None
    edited_arguments: dict[str, Any] | None = None


class VerdictOptions(TypedDict, total=False):
    """A `Verdict` but its call, as keywords (defaults and meaning in `Verdict`): what
    `approve` takes on the `Runtime`, the HTTP `Client` and the CLI's `LocalThreads`."""

    approved: bool
    comment: str | None
    edited_arguments: dict[str, Any] | None


class HumanActions:
    """The human-facing actions of a `Runtime` (see that class)."""

    store: Store
    agents: dict[str, Agent]
    clock: Callable[[], datetime]

    if TYPE_CHECKING:

        def agent(self, name: str) -> Agent: ...

        async def append_events(
            self, thread: Thread, events: Sequence[Event], lease: Lease | None
        ) -> None: ...

        async def _notify(self, thread: Thread, events: Sequence[Event]) -> None: ...

        async def _collect(self, thread: Thread) -> Thread: ...

    async def _act(
        self, thread_id: str, build: Callable[[Thread, int, datetime], list[Event]]
    ) -> Thread:
        """Load, check and append a human action atomically: a racing writer makes the loser
        re-check against the new state, so two racing approvals cannot both win."""
        for _ in range(_MAX_REBASE):
            thread = await self.store.load(thread_id)
            events = build(thread, thread.next_seq, self.clock())
            try:
                await self.append_events(thread, events, None)
                return thread
            except AppendConflict:
                continue
        raise InvalidAction(f"thread {thread_id} is changing too fast; try again")

    async def _append_rebased(
        self,
        thread: Thread,
        build: Callable[[int, datetime], list[Event]],
        lease: Lease | None,
        *,
        still_valid: Callable[[Thread], bool],
    ) -> Thread:
        """Append `build(seq, at)`; on a conflict reload and rebuild at the new tail while
        `still_valid(thread)` holds (else drop the events: someone else resolved it).

        Only events that came from outside (human actions, lifecycle) and a thread's end
        written by someone else (a cancel), with all that followed it once resumed, are
        re-based over. If what landed meanwhile came before such an end and from another
        advancer (a model call, a tool outcome, ...), two processes are
        advancing the thread at once: re-basing would record one step twice, so the conflict
        is raised instead and this advancer stops. (Leases prevent that race; see
        `threadline.worker.advance_exclusively`.)
        """
        since = thread.next_seq  # all that landed since the step began counts
        for _ in range(_MAX_REBASE):
            expected = thread.next_seq
            try:
                await self.append_events(thread, build(expected, self.clock()), lease)
                return thread
            except AppendConflict as conflict:
                thread = await self.store.load(thread.id)
                if advanced_meanwhile(thread.events[since:]):
                    raise conflict from None
                if not still_valid(thread):
                    return thread
        raise AppendConflict(thread.id, thread.next_seq, -1)

    async def approve(
        self,
        thread_id: str,
        call_id: str,
        *,
        by: str | None = None,
        channel: str = "api",
        **verdict: Unpack[VerdictOptions],
    ) -> Thread:
        """Approve (the default) or reject a pending call, with a `comment` or
        `edited_arguments` (see `Verdict`). Does not advance the thread.

        Raises:
            InvalidAction: the call is not awaiting approval, or the edited arguments fail
                the tool's schema.
            NotAllowed: the approval names its approvers and `by` is not one of them.
        """
        return await self.approve_many(
            thread_id, [Verdict(call_id, **verdict)], by=by, channel=channel
        )

    async def approve_many(
        self,
        thread_id: str,
        verdicts: Sequence[Verdict],
        *,
        by: str | None = None,
        channel: str = "api",
    ) -> Thread:
        """Verdicts on several pending calls of a thread, written together (one `approval`
        each, in one append) or not at all. Does not advance the thread.

        Raises:
            InvalidAction: no verdict, two verdicts on one call, a call not awaiting
                approval, or edited arguments that fail the tool's schema.
            NotAllowed: an approval names its approvers and `by` is not one of them.
        """
        if not verdicts:
            raise InvalidAction("give at least one verdict")
        ids = [v.call_id for v in verdicts]
        if len(set(ids)) != len(ids):
            raise InvalidAction(f"one verdict per call: {sorted(ids)} names a call twice")

        def build(thread: Thread, seq: int, at: datetime) -> list[Event]:
            return [
                self._approval(thread, v, seq + i, at, by, channel) for i, v in enumerate(verdicts)
            ]

        return await self._act(thread_id, build)

    def _approval(
        self,
        thread: Thread,
        verdict: Verdict,
        seq: int,
        at: datetime,
        by: str | None,
        channel: str,
    ) -> Approval:
        """The `approval` event of `verdict`, checked against the thread's state."""
        call = _awaiting_approval(thread, verdict.call_id, by)
        edited = None
        if verdict.edited_arguments is not None and verdict.approved:
            agent = self.agent(thread.agent)
            tool = agent.registry.get(call.tool, call.version)
            if tool is None:
                raise InvalidAction(f"tool {call.tool}@{call.version} is not registered")
            try:
                edited = tool.validate(verdict.edited_arguments).model_dump(mode="json")
            except ValidationError as exc:
                raise InvalidAction(compact_validation_error(call.tool, exc)) from None
        return Approval(
            seq=seq,
            at=at,
            call_id=verdict.call_id,
            approved=verdict.approved,
            comment=verdict.comment,
            edited_arguments=edited,
            by=by,
            channel=channel,
        )

    async def respond_instead(
        self,
        thread_id: str,
        call_id: str,
        text: str,
        *,
        by: str | None = None,
        channel: str = "api",
    ) -> Thread:
        """Answer a pending approval with a message instead of a verdict: the call does not
        run, and the model reads `text` as the person's and decides again. Does not
        advance the thread.

        Raises:
            InvalidAction: the call is not awaiting approval, or `text` is empty.
            NotAllowed: the approval names its approvers and `by` is not one of them.
        """
        if not text.strip():
            raise InvalidAction("say something to respond with instead of a verdict")

        def build(thread: Thread, seq: int, at: datetime) -> list[Event]:
            _awaiting_approval(thread, call_id, by)
            instead = RespondedInstead(
                seq=seq, at=at, call_id=call_id, text=text, by=by, channel=channel
            )
            return [instead]

        return await self._act(thread_id, build)

    async def expire_approval(self, thread_id: str, call_id: str, *, reason: str) -> Thread:
        """Reject a pending approval nobody answered in time (`ApprovalExpiry`): written
        by no one, through channel `expiry`, with `reason` as the comment the model sees.

        Raises:
            InvalidAction: the call is no longer awaiting approval (someone answered).
        """

        def build(thread: Thread, seq: int, at: datetime) -> list[Event]:
            call = thread.state.pending.get(call_id)
            if call is None or call.approval != "requested":
                raise InvalidAction(f"call {call_id!r} of thread {thread_id} was answered")
            return [
                Approval(
                    seq=seq,
                    at=at,
                    call_id=call_id,
                    approved=False,
                    comment=reason,
                    channel="expiry",
                )
            ]

        return await self._act(thread_id, build)

    async def respond(
        self,
        thread_id: str,
        request_id: str,
        text: str,
        *,
        by: str | None = None,
        channel: str = "api",
    ) -> Thread:
        """Answer the thread's open question.

        Raises:
            InvalidAction: the thread asked no question with this id.
            NotAllowed: the question names its responders and `by` is not one of them.
        """

        def build(thread: Thread, seq: int, at: datetime) -> list[Event]:
            if thread.state.human_request != request_id:
                open_id = thread.state.human_request
                raise InvalidAction(
                    f"thread {thread_id} has no open request {request_id!r}"
                    + (f"; the open one is {open_id!r}" if open_id else "; it asked nothing")
                )
            _check_responder(thread, request_id, by)
            return [
                HumanResponse(
                    seq=seq, at=at, request_id=request_id, text=text, by=by, channel=channel
                )
            ]

        return await self._act(thread_id, build)

    async def message(
        self,
        thread_id: str,
        text: str,
        *,
        sender: str | None = None,
        channel: str = "api",
        metadata: dict[str, Any] | None = None,
    ) -> Thread:
        """A new user message to a finished, escalated or question-asking thread."""

        def build(thread: Thread, seq: int, at: datetime) -> list[Event]:
            status = thread.status
            if status == Status.AWAITING_HUMAN and thread.state.human_request:
                _check_responder(thread, thread.state.human_request, sender)
                return [
                    HumanResponse(
                        seq=seq,
                        at=at,
                        request_id=thread.state.human_request,
                        text=text,
                        by=sender,
                        channel=channel,
                    )
                ]
            if status not in (Status.DONE, Status.ESCALATED, Status.FAILED, Status.WAITING):
                raise InvalidAction(
                    f"thread {thread_id} is {status.value}; messages are accepted when it is "
                    "done, escalated, failed, waiting or asking a question"
                )
            message = user_message(seq, at, text, channel, sender, metadata)
            # An agent that searches every user message (RetrievalPolicy) searches this one
            # before its next model call, as it did the launch message.
            agent = self.agents.get(thread.agent)
            if agent is None or agent.context.retrieval is None:
                return [message]
            return [
                message,
                *prefetch_events(
                    agent.context.retrieval.prefetch_steps(),
                    agent.registry,
                    text,
                    thread.metadata,
                    seq=seq + 1,
                    at=at,
                    owner=f"agent {thread.agent}",
                    label=f"m{seq}-",
                ),
            ]

        return await self._act(thread_id, build)

    async def pause(
        self, thread_id: str, *, by: str | None = None, reason: str | None = None
    ) -> Thread:
        def build(thread: Thread, seq: int, at: datetime) -> list[Event]:
            if thread.status in (Status.PAUSED, Status.DONE, Status.FAILED):
                raise InvalidAction(
                    f"thread {thread_id} is {thread.status.value}; "
                    "only an unfinished thread can be paused"
                )
            return [Paused(seq=seq, at=at, by=by, reason=reason)]

        thread = await self._act(thread_id, build)
        for child in _running_children(thread):  # a paused parent pauses its sub-agents
            with contextlib.suppress(InvalidAction):
                await self.pause(child, by=by, reason=reason or f"parent {thread_id} paused")
        return thread

    async def cancel(
        self, thread_id: str, *, by: str | None = None, reason: str | None = None
    ) -> Thread:
        """Cancel an unfinished thread: it ends `failed` ("cancelled by ..."), and the
        sub-agent threads working on its calls are cancelled too. Every pending call that
        has not started is withdrawn (`Failed.withdrawn`): awaiting approval, approved,
        chosen but not yet started, waiting to be tried again, delegated to a sub-agent.
        None of them runs later, whoever advances the thread. A call already started
        (`tool_started`, no outcome) may be running: its outcome is recorded when it comes.
        Like any failed thread it can be resumed; the model then decides again.

        Raises:
            InvalidAction: the thread already ended (done or failed).
        """
        children: list[str] = []

        def build(thread: Thread, seq: int, at: datetime) -> list[Event]:
            if thread.state.terminal in (Status.DONE, Status.FAILED):
                raise InvalidAction(
                    f"thread {thread_id} is {thread.state.terminal.value}; "
                    "only an unfinished thread can be cancelled"
                )
            text = f"cancelled by {by or 'an operator'}" + (f": {reason}" if reason else "")
            children[:] = _running_children(thread)  # before the cancel withdraws their calls
            pending = thread.state.pending.values()
            withdrawn = tuple(c.call_id for c in pending if c.attempt <= c.failed)
            events: list[Event] = []
            if thread.state.paused:  # a paused thread shows as paused: unpause it first
                events.append(Resumed(seq=seq, at=at, by=by))
            events.append(Failed(seq=seq + len(events), at=at, reason=text, withdrawn=withdrawn))
            return events

        thread = await self._act(thread_id, build)
        for child in children:  # a cancelled parent cancels its sub-agents
            with contextlib.suppress(InvalidAction):
                await self.cancel(child, by=by, reason=reason or f"parent {thread_id} cancelled")
        return thread

    async def resume(self, thread_id: str, *, by: str | None = None) -> Thread:
        """Resume a paused, escalated or failed thread (resetting its error count).

        A failed thread is one whose advance kept failing (see `threadline.worker`); resume
        it once the cause is fixed (`threadline threads retry`). A thread waiting on
        sub-agents that already ended (a crash lost their delivery) collects their outcomes
        instead, and runs on (`threadline.composition.collect`)."""
        waiting = await self.store.load(thread_id)
        if waiting.status == Status.WAITING:
            before = waiting.next_seq
            collected = await self._collect(waiting)
            if collected.next_seq != before:
                return collected

        def build(thread: Thread, seq: int, at: datetime) -> list[Event]:
            if thread.status not in (Status.PAUSED, Status.ESCALATED, Status.FAILED):
                raise InvalidAction(
                    f"thread {thread_id} is {thread.status.value}; only a "
                    "paused, escalated or failed thread can be resumed"
                )
            return [Resumed(seq=seq, at=at, by=by)]

        thread = await self._act(thread_id, build)
        for child in _running_children(thread):  # and resuming it resumes them
            with contextlib.suppress(InvalidAction):
                child_thread = await self.store.load(child)
                if child_thread.status == Status.PAUSED:
                    await self.resume(child, by=by)
        return thread

    async def raise_budget(
        self, thread_id: str, budget: Budget, *, by: str | None = None
    ) -> Thread:
        """Raise the thread's own budget to the limits `budget` sets (`budget_raised`; the
        kinds it leaves None keep theirs). A thread its budget stopped runs on: advance it
        (or let a worker). Bad input raises `InvalidAction` (`budgets.raised`), writing
        nothing; an unknown id `ThreadNotFound`."""

        def build(thread: Thread, seq: int, at: datetime) -> list[Event]:
            return [raised(self.agent(thread.agent), thread, budget, by, seq, at)]

        return await self._act(thread_id, build)

    async def external_event(
        self,
        thread_id: str,
        name: str,
        payload: dict[str, Any] | None = None,
        *,
        source: str | None = None,
    ) -> Thread:
        def build(thread: Thread, seq: int, at: datetime) -> list[Event]:
            return [
                ExternalEvent(seq=seq, at=at, name=name, payload=dict(payload or {}), source=source)
            ]

        return await self._act(thread_id, build)

    async def wake_if_due(self, thread: Thread, *, lease: Lease | None = None) -> Thread:
        """End the thread's durable wait with `wait_timed_out` if its due time has passed.

        Workers call this on a leased `waiting` thread before advancing it; a thread that
        is not waiting, or not yet due, is returned unchanged.
        """
        state = thread.state
        if (
            thread.status != Status.WAITING
            or state.waiting_until is None
            or state.waiting_until > self.clock()
        ):
            return thread
        return await self._append_rebased(
            thread,
            lambda seq, at: [WaitTimedOut(seq=seq, at=at, event=state.waiting_for)],
            lease,
            still_valid=lambda t: t.status == Status.WAITING,
        )

    # -- fork and replay (factor 12) -----------------------------------------------------

    async def fork(self, thread_id: str, *, at: int) -> Thread:
        """A new thread holding events `0..at` of `thread_id` plus a `forked_from` event."""
        source = await self.store.load(thread_id)
        if not 0 <= at < len(source.events):
            raise InvalidAction(
                f"cannot fork thread {thread_id} at {at}: it has events 0..{len(source) - 1}"
            )
        start, end = at, at
        while start > 0 and _read_from_answer(source.events[start]):
            start -= 1
        while end + 1 < len(source.events) and _read_from_answer(source.events[end + 1]):
            end += 1
        if end != at:
            raise InvalidAction(
                f"cannot fork thread {thread_id} at {at}: events {start}..{end} were written "
                f"in one append {_split_append_advice(source.events[start], start, end)}"
            )
        forked = Thread(
            new_thread_id(),
            source.agent,
            source.events[: at + 1],
            metadata={**source.metadata, "forked_from": thread_id},
        )
        forked.append(ForkedFrom(seq=at + 1, at=self.clock(), thread_id=thread_id, at_seq=at))
        await self.store.create(forked)
        await self._notify(forked, forked.events)
        return forked

    async def replay(self, thread: Thread | str) -> Thread:
        """Re-derive every step of a thread from its recorded inputs and model outputs.

        Raises `ReplayDivergence` naming the first seq where today's code decides differently.
        """
        from .replay import replay_thread

        if isinstance(thread, str):
            thread = await self.store.load(thread)
        return replay_thread(self.agent(thread.agent), thread)


def _running_children(thread: Thread) -> list[str]:
    """The sub-agent threads working on `thread`'s pending calls."""
    return [c.child for c in thread.state.pending.values() if c.child is not None]


def _check_responder(thread: Thread, request_id: str, by: str | None) -> None:
    """Raise NotAllowed unless `by` may answer question `request_id` (its `responders`)."""
    for event in reversed(thread.events):
        if isinstance(event, HumanRequest) and event.request_id == request_id:
            if event.responders and by not in event.responders:
                raise NotAllowed(f"{by or 'anonymous'} may not answer this question")
            return


def _read_from_answer(event: Event) -> bool:
    """Whether `event` was written in the same append as the model call before it."""
    return event.traits.origin == "model" and event.kind != "model_call"


def _split_append_advice(head: Event, start: int, end: int) -> str:
    """What the append `start..end` that a fork would split is, and where to fork instead.

    `head` is its first event: a model call, or a user's message followed by the calls
    pre-fetched for it (a launch, where `start` is 0 and there is no earlier seq to offer).
    """
    if head.kind == "model_call":
        return (
            f"(a model call and what was read from its answer); fork at {end} to keep the "
            f"answer, or at {start - 1} to ask the model again"
        )
    advice = f"(a user's message and the calls pre-fetched for it); fork at {end} to keep them"
    return advice + (f", or at {start - 1} to leave the message out" if start > 0 else "")


def _awaiting_approval(thread: Thread, call_id: str, by: str | None) -> PendingCall:
    """The call `call_id` of `thread`, which must await an approval `by` may give.

    Raises:
        InvalidAction: the call is not awaiting approval.
        NotAllowed: the approval names its approvers and `by` is not one of them.
    """
    call = thread.state.pending.get(call_id)
    if call is None or call.approval != "requested":
        raise InvalidAction(
            f"call {call_id!r} of thread {thread.id} is not awaiting approval"
            + (f" (it is {call.approval})" if call else "")
        )
    if call.approvers and by not in call.approvers:
        raise NotAllowed(f"{by or 'anonymous'} may not answer this approval")
    return call
