"""server/search.py: channel filters and text search over a real SQLite store's listing,
bounded per request, with a cursor that carries on where the walk stopped."""

from __future__ import annotations

from pathlib import Path

from threadline.events import Done, HumanRequest, Status, Thread, UserMessage, utcnow
from threadline.server.search import Filters, search_threads
from threadline.stores import SQLiteStore


def _thread(n: int, channel: str, text: str, *, answer: str | None = None) -> Thread:
    now = utcnow()
    thread = Thread(
        f"th_{n:04d}", "support", [UserMessage(seq=0, at=now, text=text, channel=channel)]
    )
    thread.metadata["channel"] = channel
    if answer is not None:
        thread.append(Done(seq=1, at=now, message=answer))
    return thread


async def _store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "search.db")
    for n in range(30):
        channel = "slack" if n % 3 == 0 else "email"
        answer = "refund issued" if n == 7 else None
        await store.create(_thread(n, channel, f"order {n} is late", answer=answer))
    asker = _thread(30, "api", "help")
    asker.append(HumanRequest(seq=1, at=utcnow(), request_id="r1", question="Which PARCEL?"))
    await store.create(asker)
    return store


async def test_filters_and_text_match_ids_metadata_and_what_people_wrote(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    slack = await search_threads(store, Filters(channel="slack"), limit=100, cursor=None)
    assert {s.id for s in slack.items} == {f"th_{n:04d}" for n in range(0, 30, 3)}
    assert [s.id for s in slack.items] == sorted((s.id for s in slack.items), reverse=True)
    found = {
        text: [
            s.id
            for s in (await search_threads(store, Filters(text=text), limit=10, cursor=None)).items
        ]
        for text in ("th_0012", "ORDER 5 IS", "Refund", "parcel", "nowhere")
    }
    assert found == {
        "th_0012": ["th_0012"],  # the id
        "ORDER 5 IS": ["th_0005"],  # a user message, case-insensitive
        "Refund": ["th_0007"],  # the final answer
        "parcel": ["th_0030"],  # a question asked
        "nowhere": [],
    }
    done = await search_threads(
        store, Filters(status=Status.DONE, text="refund"), limit=10, cursor=None
    )
    assert [s.id for s in done.items] == ["th_0007"]
    await store.close()


async def test_the_walk_is_bounded_and_its_cursor_carries_on(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    wanted = Filters(channel="slack")
    first = await search_threads(store, wanted, limit=100, cursor=None, scan=7)
    # Seven rows looked at (th_0030 .. th_0024): th_0027 and th_0024 match; more may follow.
    assert [s.id for s in first.items] == ["th_0027", "th_0024"] and first.cursor is not None
    seen = [s.id for s in first.items]
    cursor = first.cursor
    while cursor is not None:
        page = await search_threads(store, wanted, limit=100, cursor=cursor, scan=7)
        seen += [s.id for s in page.items]
        cursor = page.cursor
    assert seen == [f"th_{n:04d}" for n in range(27, -1, -3)]  # each once, in order
    plain = await search_threads(store, Filters(agent="support"), limit=5, cursor=None)
    assert len(plain.items) == 5 and plain.cursor is not None  # no walk: the store's page
    await store.close()
