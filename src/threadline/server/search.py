"""Finding threads: the inbox's filters (channel) and search (id and text) over a listing.

The store lists threads newest first by status and agent; a channel filter or a search
needs more than an index, so `search_threads` walks the listing from the cursor, at most
`scan` rows per request, and keeps the rows that match. Its cursor is the last row it
*looked at*, so the next page carries on where this one stopped even when few matched:
a page may hold fewer than `limit` items (even none) and still have a next one.

A search matches a thread whose id, agent or metadata contains the text, or, failing
that, one of its people's messages, questions, answers or its final answer does (case
insensitive). Reading those loads the thread, which is why the walk is bounded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import ThreadlineError
from ..events import Done, HumanRequest, HumanResponse, Status, UserMessage
from ..stores.base import Page, Store, ThreadSummary, encode_cursor

__all__ = ["Filters", "search_threads"]

SCAN = 500
"""Rows one request looks at, at most."""


@dataclass(frozen=True, slots=True)
class Filters:
    """What the caller wants: a status, agent and channel (exact) and a text (contained)."""

    status: Status | None = None
    agent: str | None = None
    channel: str | None = None
    text: str | None = None

    @property
    def needs_walk(self) -> bool:
        return bool(self.channel or self.text)


async def _matches(store: Store, summary: ThreadSummary, filters: Filters) -> bool:
    if filters.channel and summary.metadata.get("channel") != filters.channel:
        return False
    if not filters.text:
        return True
    needle = filters.text.casefold()
    head = f"{summary.id} {summary.agent} {json.dumps(summary.metadata, ensure_ascii=False)}"
    if needle in head.casefold():
        return True
    try:
        thread = await store.load(summary.id)
    except ThreadlineError:  # deleted or damaged since it was listed: not a match
        return False
    for event in thread.events:
        if isinstance(event, UserMessage | HumanResponse):
            text = event.text
        elif isinstance(event, HumanRequest):
            text = event.question
        elif isinstance(event, Done):
            text = event.message
        else:
            continue
        if needle in text.casefold():
            return True
    return False


async def search_threads(
    store: Store, filters: Filters, *, limit: int, cursor: str | None, scan: int = SCAN
) -> Page:
    """Up to `limit` matching threads, newest first, looking at no more than `scan` rows."""
    if not filters.needs_walk:
        return await store.list(
            status=filters.status, agent=filters.agent, limit=limit, cursor=cursor
        )
    found: list[ThreadSummary] = []
    skipped = []
    looked = 0
    last: str | None = None
    while looked < scan and len(found) < limit:
        page = await store.list(
            status=filters.status,
            agent=filters.agent,
            limit=min(100, scan - looked),
            cursor=cursor,
        )
        skipped += page.skipped
        for summary in page.items:
            looked += 1
            last = summary.id
            if await _matches(store, summary, filters):
                found.append(summary)
                if len(found) == limit:
                    break
        if len(found) == limit:
            break
        cursor = page.cursor
        if cursor is None:
            return Page(found, None, skipped)
    return Page(found, encode_cursor(last) if last else cursor, skipped)
