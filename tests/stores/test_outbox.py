"""The channel outbox beside each store (memory, SQLite, PostgreSQL): idempotent records,
exclusive claims, outcomes, and conversation links."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from threadline.events import utcnow
from threadline.stores import OutboxEntry, Store, outbox


def _entry(n: int, *, due_in: float = 0.0, topic: str = "approval:c1") -> OutboxEntry:
    return OutboxEntry(
        id=f"th_1:{n}:approval@slack:x",
        thread_id="th_1",
        topic=topic,
        channel="slack",
        body={"notice": {"n": n}, "text": "é ünïcode"},
        due_at=utcnow() + timedelta(seconds=due_in),
    )


async def test_entries_are_recorded_once_by_id(store: Store) -> None:
    box = outbox(store)
    now = utcnow()
    assert await box.add([_entry(1), _entry(2)], at=now) == [_entry(1).id, _entry(2).id]
    assert await box.add([_entry(2), _entry(3)], at=now) == [_entry(3).id]
    about = await box.about("th_1", "approval:c1")
    assert [e.id for e in about] == [_entry(1).id, _entry(2).id, _entry(3).id]
    assert about[0].body == {"notice": {"n": 1}, "text": "é ünïcode"}
    assert about[0].status == "pending" and about[0].attempts == 0 and about[0].ref is None
    assert await box.about("th_1", "question:q") == []


async def test_a_claim_is_exclusive_until_it_expires(store: Store) -> None:
    box = outbox(store)
    await box.add([_entry(1), _entry(2, due_in=3600)], at=utcnow())
    now = utcnow() + timedelta(seconds=1)
    first = await box.claim(now=now, hold=timedelta(seconds=60))
    assert [e.id for e in first] == [_entry(1).id]  # the later one is not due
    assert first[0].attempts == 1
    assert await box.claim(now=now, hold=timedelta(seconds=60)) == []  # held
    # The holder died: after the hold another sender takes it, counting a second attempt.
    again = await box.claim(now=now + timedelta(seconds=61), hold=timedelta(seconds=60))
    assert [(e.id, e.attempts) for e in again] == [(_entry(1).id, 2)]


async def test_a_claim_takes_only_the_channels_it_sends_on(store: Store) -> None:
    box = outbox(store)
    email = OutboxEntry(
        id="th_1:9:answer@email:x",
        thread_id="th_1",
        topic="answer:9",
        channel="email",
        body={},
        due_at=utcnow(),
    )
    await box.add([_entry(1), email], at=utcnow())
    now = utcnow() + timedelta(seconds=1)
    hold = timedelta(seconds=60)
    assert await box.claim(now=now, hold=hold, channels=[]) == []
    # A process without Slack leaves Slack's entries (and their attempts) alone.
    assert [e.id for e in await box.claim(now=now, hold=hold, channels=["email"])] == [email.id]
    slack = await box.claim(now=now, hold=hold, channels=["email", "slack"])
    assert [(e.id, e.attempts) for e in slack] == [(_entry(1).id, 1)]


async def test_racing_claims_hand_each_entry_to_one_sender(store: Store) -> None:
    box = outbox(store)
    await box.add([_entry(n) for n in range(8)], at=utcnow())
    now = utcnow() + timedelta(seconds=1)
    batches = await asyncio.gather(
        *(box.claim(now=now, hold=timedelta(seconds=60), limit=3) for _ in range(5))
    )
    ids = [e.id for batch in batches for e in batch]
    assert sorted(ids) == sorted(_entry(n).id for n in range(8))


async def test_outcomes_sent_retry_and_failed(store: Store) -> None:
    box = outbox(store)
    await box.add([_entry(1), _entry(2)], at=utcnow())
    now = utcnow() + timedelta(seconds=1)
    claimed = await box.claim(now=now, hold=timedelta(seconds=60), ids=[_entry(1).id])
    assert [e.id for e in claimed] == [_entry(1).id]
    await box.finish(_entry(1).id, "sent", at=now, ref={"channel": "C1", "ts": "1.2"})
    retry_at = now + timedelta(seconds=30)
    await box.claim(now=now, hold=timedelta(seconds=60))
    await box.finish(_entry(2).id, "pending", at=now, error="boom", retry_at=retry_at)
    assert await box.claim(now=now + timedelta(seconds=5), hold=timedelta(seconds=60)) == []
    later = await box.claim(now=retry_at, hold=timedelta(seconds=60))
    assert [(e.id, e.attempts, e.error) for e in later] == [(_entry(2).id, 2, "boom")]
    await box.finish(_entry(2).id, "failed", at=retry_at, error="gave up")
    by_id = {e.id: e for e in await box.about("th_1", "approval:c1")}
    assert by_id[_entry(1).id].status == "sent"
    assert by_id[_entry(1).id].ref == {"channel": "C1", "ts": "1.2"}
    assert (by_id[_entry(2).id].status, by_id[_entry(2).id].error) == ("failed", "gave up")
    assert await box.claim(now=retry_at + timedelta(days=1), hold=timedelta(seconds=1)) == []


async def test_conversation_links(store: Store) -> None:
    box = outbox(store)
    assert await box.linked("slack", "C1:1.2") is None
    assert await box.link("slack", "C1:1.2", "th_1", at=utcnow())
    assert not await box.link("slack", "C1:1.2", "th_2", at=utcnow())  # the first stays
    assert await box.linked("slack", "C1:1.2") == "th_1"
    assert await box.linked("email", "C1:1.2") is None
