"""The channel outbox and conversation links, kept beside a store's threads.

Channels (`threadline.channels`) tell people about a thread (an approval to give, a
question, the final answer) over Slack, email, ... Sending is I/O that can fail or be cut
off by a crash, so a notice is first *recorded* here, then sent, then marked sent:

* `add` records entries by id, idempotently: an entry id that exists is not added again
  (the same notice observed twice, or by two processes, is sent once).
* `claim` hands due, pending entries to one sender for a while (`claimed_until`), counting
  an attempt; entries another sender holds are skipped. A sender that dies leaves its claim
  to expire, and the next sweep sends the entry again: at most one resend per crash.
* `finish` records the outcome: `sent` with the channel's reference (a Slack message's
  `ts`, an email's `Message-ID`), `skipped` (no longer relevant), or back to `pending`
  at a later time (a retry) or `failed` (given up).
* Conversation links map a channel's conversation (a Slack thread, ...) to the thread it
  belongs to, so a reply there reaches the right thread.

The store knows nothing about channels: bodies and references are opaque JSON objects.
"""

from __future__ import annotations

import asyncio
import builtins
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from .dialect import Plan, PlanRunner, Query, Tx, select, select_one, stored_json, stored_time
from .rows import Columns, nullable

__all__ = [
    "MemoryOutbox",
    "Only",
    "Outbox",
    "OutboxEntry",
    "OutboxStatus",
    "Outcome",
    "SQLOutbox",
]

OutboxStatus = Literal["pending", "sent", "skipped", "failed"]


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One message to send on one channel.

    Attributes:
        id: unique and stable (a notice id and its destination): recording it twice adds
            it once.
        thread_id: the thread it is about.
        topic: what it is about within the thread (`approval:<call_id>`,
            `question:<request_id>`, `answer:<seq>`, ...), to find what was sent before.
        channel: the channel that sends it.
        body: what the channel needs to send it (opaque JSON object).
        due_at: not sent before this time (reminders and expiries are due later).
        status: `pending` until sent (or skipped, or failed for good).
        attempts: claims so far.
        ref: what the channel returned when it sent it (opaque JSON object).
    """

    id: str
    thread_id: str
    topic: str
    channel: str
    body: dict[str, Any]
    due_at: datetime
    status: OutboxStatus = "pending"
    attempts: int = 0
    ref: dict[str, Any] | None = None
    error: str | None = None


Only = frozenset[str] | None
"""A claim's filter (`Outbox._claim`): None admits all, else the values admitted (not empty)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a claimed entry (`Outbox.finish`)."""

    entry_id: str
    status: OutboxStatus
    at: datetime
    ref: dict[str, Any] | None
    error: str | None
    retry_at: datetime | None


class Outbox(ABC):
    """Where channel notices wait to be sent (see the module docstring)."""

    @abstractmethod
    async def add(self, entries: Sequence[OutboxEntry], *, at: datetime) -> list[str]:
        """Record the entries whose ids are new; return those ids (the others existed)."""

    async def claim(
        self,
        *,
        now: datetime,
        hold: timedelta,
        limit: int = 20,
        ids: Sequence[str] | None = None,
        channels: Sequence[str] | None = None,
    ) -> list[OutboxEntry]:
        """Claim up to `limit` pending entries due by `now` that nobody holds (only
        `ids`, and only entries of `channels`, when given) for `hold`, counting an
        attempt on each."""
        if (ids is not None and not ids) or (channels is not None and not channels):
            return []  # an empty filter admits no entry
        wanted, sent_on = (frozenset(v) if v is not None else None for v in (ids, channels))
        return await self._claim(now, now + hold, limit, wanted, sent_on)

    @abstractmethod
    async def _claim(
        self, now: datetime, until: datetime, limit: int, ids: Only, channels: Only
    ) -> list[OutboxEntry]:
        """`claim` once its filters admit some entry: claimed until `until`."""

    async def finish(
        self,
        entry_id: str,
        status: OutboxStatus,
        *,
        at: datetime,
        ref: dict[str, Any] | None = None,
        error: str | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        """Record an outcome; `pending` with `retry_at` releases the claim until then."""
        await self._finish(Outcome(entry_id, status, at, ref, error, retry_at))

    @abstractmethod
    async def _finish(self, outcome: Outcome) -> None:
        """`finish` with its arguments as one record."""

    @abstractmethod
    async def about(self, thread_id: str, topic: str) -> list[OutboxEntry]:
        """The entries of one thread and topic, oldest first."""

    @abstractmethod
    async def link(self, channel: str, conversation: str, thread_id: str, *, at: datetime) -> bool:
        """Tie a conversation of `channel` to a thread; False if it already was (kept)."""

    @abstractmethod
    async def linked(self, channel: str, conversation: str) -> str | None:
        """The thread a conversation belongs to, if any."""


@dataclass
class MemoryOutbox(Outbox):
    """The outbox in dicts (tests, `memory://`)."""

    _entries: dict[str, OutboxEntry] = field(default_factory=dict)
    _claims: dict[str, datetime] = field(default_factory=dict)
    _links: dict[tuple[str, str], str] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def add(self, entries: Sequence[OutboxEntry], *, at: datetime) -> list[str]:
        added = []
        for entry in entries:  # no await inside: atomic on the event loop
            if entry.id not in self._entries:
                self._entries[entry.id] = entry
                added.append(entry.id)
        return added

    async def _claim(
        self, now: datetime, until: datetime, limit: int, ids: Only, channels: Only
    ) -> list[OutboxEntry]:
        out: list[OutboxEntry] = []
        for entry in sorted(self._entries.values(), key=lambda e: (e.due_at, e.id)):
            if len(out) >= limit:
                break
            free = self._claims.get(entry.id) is None or self._claims[entry.id] <= now
            if (
                entry.status == "pending"
                and entry.due_at <= now
                and free
                and (ids is None or entry.id in ids)
                and (channels is None or entry.channel in channels)
            ):
                entry = replace(entry, attempts=entry.attempts + 1)
                self._entries[entry.id] = entry
                self._claims[entry.id] = until
                out.append(entry)
        return out

    async def _finish(self, outcome: Outcome) -> None:
        entry = self._entries.get(outcome.entry_id)
        if entry is None:
            return
        self._entries[entry.id] = replace(
            entry,
            status=outcome.status,
            ref=outcome.ref if outcome.ref is not None else entry.ref,
            error=outcome.error,
            due_at=outcome.retry_at if outcome.retry_at is not None else entry.due_at,
        )
        self._claims.pop(entry.id, None)

    async def about(self, thread_id: str, topic: str) -> list[OutboxEntry]:
        return sorted(
            (e for e in self._entries.values() if e.thread_id == thread_id and e.topic == topic),
            key=lambda e: (e.due_at, e.id),
        )

    async def link(self, channel: str, conversation: str, thread_id: str, *, at: datetime) -> bool:
        if (channel, conversation) in self._links:
            return False
        self._links[channel, conversation] = thread_id
        return True

    async def linked(self, channel: str, conversation: str) -> str | None:
        return self._links.get((channel, conversation))


class SQLOutbox(Outbox):
    """The outbox in the `channel_outbox` and `channel_conversations` tables of a SQL
    store's database, on its connections (queries written once for both dialects)."""

    def __init__(self, store: PlanRunner) -> None:
        self._store = store

    async def add(self, entries: Sequence[OutboxEntry], *, at: datetime) -> list[str]:
        d = self._store.dialect
        sql = d.sql(_INSERT)
        rows = [
            {
                "id": e.id,
                "thread_id": e.thread_id,
                "topic": e.topic,
                "channel": e.channel,
                "body": json.dumps(e.body),
                "status": e.status,
                "due_at": d.time(e.due_at),
                "created_at": d.time(at),
            }
            for e in entries
        ]

        def plan() -> Plan[list[str]]:
            added = []
            for row in rows:
                if (yield Query(sql, row)).rowcount == 1:
                    added.append(str(row["id"]))
            return added

        return await self._store.run(plan, Tx.ATOMIC)

    async def _claim(
        self, now: datetime, until: datetime, limit: int, ids: Only, channels: Only
    ) -> list[OutboxEntry]:
        d = self._store.dialect
        args: dict[str, Any] = {"now": d.time(now), "until": d.time(until), "limit": limit}
        filters = ""
        for column, values in (("id", ids), ("channel", channels)):
            if values is not None:
                condition, bound = d.any_of(column, column + "s", sorted(values))
                filters, args = f"{filters} AND {condition}", {**args, **bound}
        sql = d.sql(_CLAIM.replace("{filters}", filters))

        def plan() -> Plan[list[OutboxEntry]]:
            return [_ENTRY.read(r) for r in (yield Query(sql, args)).rows]

        return await self._store.run(plan, Tx.WRITE)

    async def _finish(self, outcome: Outcome) -> None:
        d = self._store.dialect
        args = {
            "id": outcome.entry_id,
            "status": outcome.status,
            "ref": json.dumps(outcome.ref) if outcome.ref is not None else None,
            "error": outcome.error,
            "at": d.time(outcome.at),
            "retry_at": d.at(outcome.retry_at),
        }

        def plan() -> Plan[None]:
            yield Query(d.sql(_FINISH), args)

        await self._store.run(plan, Tx.WRITE)

    async def about(self, thread_id: str, topic: str) -> builtins.list[OutboxEntry]:
        sql = f"{_SELECT} WHERE thread_id = :t AND topic = :topic{_ORDER}"
        return await select(self._store, sql, {"t": thread_id, "topic": topic}, _ENTRY.read)

    async def link(self, channel: str, conversation: str, thread_id: str, *, at: datetime) -> bool:
        d = self._store.dialect
        args = {"c": channel, "v": conversation, "t": thread_id, "at": d.time(at)}

        def plan() -> Plan[bool]:
            return (yield Query(d.sql(_LINK), args)).rowcount == 1

        return await self._store.run(plan, Tx.WRITE)

    async def linked(self, channel: str, conversation: str) -> str | None:
        sql = "SELECT thread_id FROM channel_conversations WHERE channel = :c AND conversation = :v"
        return await select_one(
            self._store, sql, {"c": channel, "v": conversation}, lambda row: str(row[0])
        )


_ENTRY = Columns(
    OutboxEntry,
    "id, thread_id, topic, channel, body{text}, status, due_at, attempts, ref{text}, error",
    body=stored_json,
    due_at=stored_time,
    attempts=int,
    ref=nullable(stored_json),
)
_SELECT = f"SELECT {_ENTRY.names} FROM channel_outbox"
_ORDER = " ORDER BY due_at, id"
_INSERT = (
    "INSERT INTO channel_outbox (id, thread_id, topic, channel, body, status, due_at, "
    "attempts, created_at) VALUES (:id, :thread_id, :topic, :channel, :body{json}, :status, "
    ":due_at, 0, :created_at) ON CONFLICT (id) DO NOTHING"
)
_CLAIM = (
    "UPDATE channel_outbox SET claimed_until = :until, attempts = attempts + 1 "
    "WHERE id IN (SELECT id FROM channel_outbox WHERE status = 'pending' AND due_at <= :now "
    "AND (claimed_until IS NULL OR claimed_until <= :now){filters} "
    "ORDER BY due_at, id LIMIT :limit{skip_locked}) "
    f"RETURNING {_ENTRY.names}"
)
_FINISH = (
    "UPDATE channel_outbox SET status = :status, ref = COALESCE(:ref{json}, ref), "
    "error = :error, claimed_until = NULL, due_at = COALESCE(:retry_at, due_at), "
    "sent_at = CASE WHEN :status = 'sent' THEN :at ELSE sent_at END WHERE id = :id"
)
_LINK = (
    "INSERT INTO channel_conversations (channel, conversation, thread_id, created_at) "
    "VALUES (:c, :v, :t, :at) ON CONFLICT (channel, conversation) DO NOTHING"
)
