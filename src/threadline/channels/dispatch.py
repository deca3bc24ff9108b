"""The dispatcher: a runtime observer that tells people about threads, durably.

When a thread appends an approval request, a question, a final answer (`done`) or an
escalation, the dispatcher works out where each notice goes (`routing.py`) and records one
outbox entry per destination *before* sending anything; then it claims and sends them in a
background task and marks each sent with the channel's reference. A verdict or an answer
(`approval`, `human_response`) becomes a `decided` notice to every place the approval or
question was sent, which updates it there ("approved by alice in Slack").

Approvals whose tool has an `ApprovalExpiry` get their reminders and their expiry recorded
in the outbox too, due later; `sweep()` (run periodically by the server) sends what is due:
reminders (skipped once the approval is answered), retries, entries a crashed process
claimed, and expiries (reject the call, or escalate, if it is still pending).

Invariants:
    * An entry id is the notice id plus its destination: observing an event twice (or in
      two processes) records it once, so it is sent once; a crash between sending and
      marking sent resends it at most once per crash (the claim expires).
    * Nothing here raises into the run loop: a failed record or send is logged, retried by
      the sweep, and never breaks a checkpointed step.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from ..agent import Agent
from ..errors import InvalidAction, ThreadlineError
from ..events import (
    Approval,
    ApprovalRequested,
    Done,
    Escalated,
    Event,
    HumanRequest,
    HumanResponse,
    RespondedInstead,
    Status,
    Thread,
    utcnow,
)
from ..stores import outbox as outbox_of
from ..stores.base import Store, ThreadSummary
from ..stores.outbox import Outbox, OutboxEntry
from .base import Channel, ChannelError, Destination, Notice, NoticeKind
from .routing import destinations

__all__ = ["LIFECYCLE", "Dispatcher", "notice_for"]

log = logging.getLogger("threadline.channels")

E = TypeVar("E", ApprovalRequested, HumanRequest)

RECENT = timedelta(days=1)
"""How recently a thread must have ended for `catch_up` to send its ending left out."""

LIFECYCLE = "threadline"
"""The outbox `channel` of expiry entries (acted on by the dispatcher, not sent)."""

_CHANNEL_NAMES = {"slack": "Slack", "email": "email", "ui": "the inbox", "api": "the API"}


def notice_for(thread: Thread, event: Event) -> Notice | None:
    """The notice an appended event calls for, else None."""
    match event:
        case ApprovalRequested():
            return _notice(
                thread,
                event,
                "approval",
                f"approval:{event.call_id}",
                _request_text(thread),
                call_id=event.call_id,
                tool=event.tool,
                arguments=event.arguments,
                responders=event.approvers,
            )
        case HumanRequest():
            return _notice(
                thread,
                event,
                "question",
                f"question:{event.request_id}",
                event.question,
                request_id=event.request_id,
                responders=event.responders,
            )
        case Done():
            return _notice(thread, event, "answer", f"answer:{event.seq}", event.message)
        case Escalated():
            return _notice(thread, event, "escalation", f"escalation:{event.seq}", event.reason)
        case Approval() | RespondedInstead():
            return _decided(thread, event, f"approval:{event.call_id}")
        case HumanResponse():
            return _decided(thread, event, f"question:{event.request_id}")
    return None


def _notice(
    thread: Thread, event: Event, kind: NoticeKind, topic: str, text: str, **fields: Any
) -> Notice:
    return Notice(
        id=f"{thread.id}:{event.seq}:{kind}",
        kind=kind,
        thread_id=thread.id,
        agent=thread.agent,
        seq=event.seq,
        topic=topic,
        text=text,
        **fields,
    )


def _decided(
    thread: Thread, event: Approval | RespondedInstead | HumanResponse, topic: str
) -> Notice:
    via = _CHANNEL_NAMES.get(event.channel, event.channel)
    by = event.by or "someone"
    extra: dict[str, Any]
    if isinstance(event, HumanResponse):
        extra = {"request_id": event.request_id, "comment": event.text}
        question = _find(thread, HumanRequest, lambda e: e.request_id == event.request_id)
        if question is not None:
            extra["question"] = question.question
        text = f"answered by {by} in {via}"
        return _notice(
            thread, event, "decided", topic, text, by=event.by, via=event.channel, **extra
        )
    if isinstance(event, RespondedInstead):
        text = f"answered with a message instead by {by} in {via}"
        extra = {"call_id": event.call_id, "comment": event.text}
    else:
        verb = "approved" if event.approved else "rejected"
        edited = " with edits" if event.edited_arguments is not None else ""
        text = f"{verb}{edited} by {by} in {via}"
        if event.channel == "expiry":
            text = f"{verb}: nobody answered in time"
        extra = {"call_id": event.call_id, "approved": event.approved, "comment": event.comment}
    asked = _find(thread, ApprovalRequested, lambda e: e.call_id == event.call_id)
    if asked is not None:
        extra |= {"tool": asked.tool, "arguments": asked.arguments}
    return _notice(thread, event, "decided", topic, text, by=event.by, via=event.channel, **extra)


def _find(thread: Thread, kind: type[E], match: Callable[[E], bool]) -> E | None:
    """The latest event of `kind` that `match`es (decisions follow their request closely)."""
    for event in reversed(thread.events):
        if isinstance(event, kind) and match(event):
            return event
    return None


def _ending(thread: Thread) -> Done | Escalated | None:
    """The final answer or escalation that ended `thread` (its latest one)."""
    return next((e for e in reversed(thread.events) if isinstance(e, Done | Escalated)), None)


def _request_text(thread: Thread) -> str:
    """The person's request that led here (the thread's first message), for context."""
    first = thread.events[0] if thread.events else None
    text = getattr(first, "text", "")
    return text if isinstance(text, str) else ""


def _still_open(thread: Thread, event: Event) -> bool:
    """An approval request or question nobody has answered yet."""
    if isinstance(event, ApprovalRequested):
        call = thread.state.pending.get(event.call_id)
        return call is not None and call.approval == "requested"
    return isinstance(event, HumanRequest) and event.request_id == thread.state.human_request


async def _summaries(store: Store, status: Status, limit: int) -> AsyncIterator[ThreadSummary]:
    """Up to `limit` threads of `status`, newest first, page by page."""
    cursor, seen = None, 0
    while seen < limit:
        page = await store.list(status=status, limit=min(200, limit - seen), cursor=cursor)
        for summary in page.items:
            yield summary
        seen += len(page.items)
        cursor = page.cursor
        if cursor is None:
            return


def _entry_id(notice_id: str, destination: Destination) -> str:
    digest = hashlib.sha256(destination.key.encode()).hexdigest()[:16]
    return f"{notice_id}@{destination.channel}:{digest}"


class Dispatcher:
    """Runtime observer sending notices on channels through the store's outbox.

    Args:
        channels: the channels this process sends on, by name.
        hold: how long a claimed entry is held by its sender before another may take it.
        max_attempts: tries per entry before it is marked failed.
        backoff: seconds before the first retry (doubling).

    Call `bind(runtime, kick)` once the runtime exists (before it runs anything).
    """

    def __init__(
        self,
        channels: Mapping[str, Channel],
        *,
        hold: timedelta = timedelta(seconds=60),
        max_attempts: int = 5,
        backoff: float = 2.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.channels = dict(channels)
        self.hold = hold
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.clock = clock
        self._runtime: Any = None
        self._kick: Callable[[str], None] = lambda _thread_id: None
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.failed = 0

    def bind(self, runtime: Any, kick: Callable[[str], None] | None = None) -> None:
        """Give the dispatcher the runtime it acts through (expiries) and the runner's
        kick (to advance a thread an expiry rejected)."""
        self._runtime = runtime
        if kick is not None:
            self._kick = kick

    @property
    def outbox(self) -> Outbox:
        if self._runtime is None:
            raise ThreadlineError("Dispatcher.bind(runtime) was not called")
        return outbox_of(self._runtime.store)

    # -- observing appends -----------------------------------------------------------------

    async def __call__(self, thread: Thread, events: Sequence[Event]) -> None:
        entries: list[OutboxEntry] = []
        try:
            for event in events:
                notice = notice_for(thread, event)
                if notice is not None:
                    entries += await self.entries_for(thread, notice, event.at)
            if not entries:
                return
            added = await self.outbox.add(entries, at=self.clock())
        except Exception:
            log.exception("recording notices of thread %s failed", thread.id)
            return
        now = self.clock()
        due = [e.id for e in entries if e.id in set(added) and e.due_at <= now]
        if due:
            # In the background: the append is checkpointed and the run loop moves on.
            task = asyncio.get_running_loop().create_task(self._send_ids(due))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def entries_for(self, thread: Thread, notice: Notice, at: datetime) -> list[OutboxEntry]:
        """The outbox entries of one notice: one per destination, plus the reminders and
        expiry of an approval whose tool has an `ApprovalExpiry`."""
        if notice.kind == "decided":
            # Without channels nothing was sent that a decision could update.
            return await self._decided_entries(notice, at) if self.channels else []
        agent = self._agent(thread.agent)
        routes = agent.routes if agent is not None else {}
        dests = destinations(thread, notice.kind, routes, self.channels)
        out = [self._entry(notice, dest, at) for dest in dests]
        expiry = (
            agent.expiry_for(notice.tool or "") if agent and notice.kind == "approval" else None
        )
        if expiry is None:
            return out
        deadline = at + expiry.after
        for before in expiry.reminders:
            reminder = notice.model_copy(
                update={
                    "id": f"{notice.id}:remind{int(before.total_seconds())}",
                    "kind": "reminder",
                }
            )
            out += [
                self._entry(reminder, d, deadline - before, updates=_entry_id(notice.id, d))
                for d in dests
            ]
        out.append(
            OutboxEntry(
                id=f"{notice.id}:expire",
                thread_id=notice.thread_id,
                topic=notice.topic,
                channel=LIFECYCLE,
                body={
                    "expire": {
                        "call_id": notice.call_id,
                        "tool": notice.tool,
                        "then": expiry.then,
                        "after": expiry.after.total_seconds(),
                    },
                    "notice": notice.model_dump(mode="json"),
                },
                due_at=deadline,
            )
        )
        return out

    async def _decided_entries(self, notice: Notice, at: datetime) -> list[OutboxEntry]:
        """A decision goes wherever the approval or question was sent, updating it."""
        out = []
        for entry in await self.outbox.about(notice.thread_id, notice.topic):
            kind = entry.body.get("notice", {}).get("kind")
            if entry.channel == LIFECYCLE or kind not in ("approval", "question"):
                continue
            dest = Destination.model_validate(entry.body["destination"])
            out.append(self._entry(notice, dest, at, updates=entry.id))
        return out

    def _entry(
        self, notice: Notice, dest: Destination, due: datetime, *, updates: str | None = None
    ) -> OutboxEntry:
        return OutboxEntry(
            id=_entry_id(notice.id, dest),
            thread_id=notice.thread_id,
            topic=notice.topic,
            channel=dest.channel,
            body={
                "notice": notice.model_dump(mode="json"),
                "destination": dest.model_dump(mode="json"),
                "updates": updates,
            },
            due_at=due,
        )

    def _agent(self, name: str) -> Agent | None:
        agents: dict[str, Agent] = getattr(self._runtime, "agents", {})
        return agents.get(name)

    async def catch_up(self, *, limit: int = 10_000, recent: timedelta = RECENT) -> int:
        """Record the notices a stopped process may have left out.

        A process can stop between an append and its outbox record. Run at start-up (by
        the server and every worker), this records the notices of every approval and
        question still open, and those of the final answer or escalation of every thread
        that ended within `recent` (older news is stale: it is not sent late), for the
        agents this process serves (only they know their routes). Idempotent:
        entry ids are stable, so a notice already queued or sent is not recorded again,
        and several processes starting together record it once. At most `limit` threads
        of each status are looked at, newest first. Returns how many threads were loaded.
        """
        statuses = (Status.AWAITING_APPROVAL, Status.AWAITING_HUMAN, Status.DONE, Status.ESCALATED)
        since, loaded = self.clock() - recent, 0
        for status in statuses:
            async for summary in _summaries(self._runtime.store, status, limit):
                if status in (Status.DONE, Status.ESCALATED) and summary.updated_at < since:
                    continue
                if self._agent(summary.agent) is None:
                    continue  # its routes are known where its agent is served
                thread = await self._runtime.store.load(summary.id)
                loaded += 1
                left_out = [e for e in thread.events if _still_open(thread, e)]
                ending = _ending(thread) if status in (Status.DONE, Status.ESCALATED) else None
                if ending is not None:
                    left_out.append(ending)
                if left_out:
                    await self(thread, left_out)
        return loaded

    async def serve(self, *, interval: float, stopping: Callable[[], bool]) -> None:
        """What every process that advances threads runs beside them (the server, each
        `threadline worker`): `catch_up`, then `sweep` every `interval` seconds until
        `stopping()` or cancelled. Reminders, expiries and retries are sent by whichever
        process claims them first (the claim makes that one process)."""
        try:
            loaded = await self.catch_up()
            log.info("channels: looked at %d thread(s) for notices left out", loaded)
        except Exception as exc:  # never a reason not to start
            log.warning("channel catch-up failed: %s: %s", type(exc).__name__, exc)
        # Cancelled, this ends even if a database driver swallowed the cancellation inside
        # a store call (psycopg's pool can: it retries through it).
        this = asyncio.current_task()
        while not stopping() and not (this and this.cancelling()):
            try:
                while await self.sweep() and not stopping():
                    pass
            except Exception as exc:  # the store away for a moment: try again next pass
                log.warning("channel outbox pass failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(interval)

    # -- sending ---------------------------------------------------------------------------

    async def sweep(self, *, limit: int = 50) -> int:
        """Send (or act on) every due entry nobody holds; returns how many were handled."""
        entries = await self.outbox.claim(
            now=self.clock(), hold=self.hold, limit=limit, channels=[*self.channels, LIFECYCLE]
        )
        for entry in entries:
            await self._handle(entry)
        return len(entries)

    async def _send_ids(self, ids: Sequence[str]) -> None:
        try:
            for entry in await self.outbox.claim(
                now=self.clock(), hold=self.hold, limit=len(ids), ids=ids
            ):
                await self._handle(entry)
        except Exception:
            log.exception("sending notices failed; the sweep retries them")

    async def _handle(self, entry: OutboxEntry) -> None:
        now = self.clock()
        if entry.attempts > self.max_attempts:
            self.failed += 1
            await self.outbox.finish(entry.id, "failed", at=now, error="too many attempts")
            return
        try:
            if entry.channel == LIFECYCLE:
                await self._expire(entry)
                await self.outbox.finish(entry.id, "sent", at=self.clock())
                return
            if not await self._still_relevant(entry):
                await self.outbox.finish(entry.id, "skipped", at=self.clock())
                return
            ref = await self._send(entry)
        except ChannelError as exc:
            await self._retry(entry, str(exc), retryable=exc.retryable)
            return
        except Exception as exc:
            log.exception("notice %s on %s failed", entry.id, entry.channel)
            await self._retry(entry, f"{type(exc).__name__}: {exc}", retryable=True)
            return
        self.sent += 1
        link = ref.get("link")
        if isinstance(link, str) and link:
            await self.outbox.link(entry.channel, link, entry.thread_id, at=self.clock())
        await self.outbox.finish(entry.id, "sent", at=self.clock(), ref=ref)

    async def _send(self, entry: OutboxEntry) -> dict[str, Any]:
        channel = self.channels.get(entry.channel)
        if channel is None:
            raise ChannelError(f"channel {entry.channel} is not running here", retryable=True)
        notice = Notice.model_validate(entry.body["notice"])
        dest = Destination.model_validate(entry.body["destination"])
        previous = None
        updates = entry.body.get("updates")
        if isinstance(updates, str):
            for other in await self.outbox.about(entry.thread_id, entry.topic):
                if other.id == updates:
                    previous = other.ref
        return await channel.send(notice, dest, previous)

    async def _still_relevant(self, entry: OutboxEntry) -> bool:
        """A reminder of an approval someone answered is not sent."""
        if entry.body.get("notice", {}).get("kind") != "reminder":
            return True
        call_id = entry.body["notice"].get("call_id")
        thread = await self._runtime.store.load(entry.thread_id)
        call = thread.state.pending.get(call_id)
        return call is not None and call.approval == "requested"

    async def _retry(self, entry: OutboxEntry, error: str, *, retryable: bool) -> None:
        now = self.clock()
        if not retryable or entry.attempts >= self.max_attempts:
            self.failed += 1
            log.warning("notice %s on %s failed for good: %s", entry.id, entry.channel, error)
            await self.outbox.finish(entry.id, "failed", at=now, error=error[:500])
            return
        wait = timedelta(seconds=self.backoff * 2 ** (entry.attempts - 1))
        await self.outbox.finish(
            entry.id, "pending", at=now, error=error[:500], retry_at=now + wait
        )

    async def _expire(self, entry: OutboxEntry) -> None:
        """An approval's time is up: reject it, or send the escalation notices."""
        spec = entry.body["expire"]
        notice = Notice.model_validate(entry.body["notice"])
        thread = await self._runtime.store.load(entry.thread_id)
        call = thread.state.pending.get(spec["call_id"])
        if call is None or call.approval != "requested" or thread.status == Status.PAUSED:
            return
        waited = timedelta(seconds=float(spec["after"]))
        reason = f"nobody answered the approval of {spec['tool']} within {waited}"
        if spec["then"] == "reject":
            try:
                await self._runtime.expire_approval(thread.id, spec["call_id"], reason=reason)
            except InvalidAction:
                return  # answered meanwhile: the first answer wins
            self._kick(thread.id)
            return
        escalation = notice.model_copy(
            update={"id": f"{notice.id}:expired", "kind": "escalation", "text": reason}
        )
        agent = self._agent(thread.agent)
        routes = agent.routes if agent is not None else {}
        entries = [
            self._entry(escalation, dest, self.clock())
            for dest in destinations(thread, "escalation", routes, self.channels)
        ]
        added = await self.outbox.add(entries, at=self.clock())
        if added:
            await self._send_ids(added)

    async def flush(self) -> None:
        """Wait for the sends started by observed appends (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*set(self._tasks), return_exceptions=True)

    async def aclose(self, grace: float = 5.0) -> None:
        """Give in-flight sends `grace` seconds, then cancel the rest (the sweep of the
        next process sends what was cut off)."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
