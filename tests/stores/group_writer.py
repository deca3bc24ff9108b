"""A process of the group-commit kill tests: many threads appending at once, each append
acknowledged on stdout only after the store returned from it.

    python group_writer.py STORE_URL THREADS

Opens the store at STORE_URL (`sqlite:///path.db`: synchronous=FULL by default;
`postgresql://...`: group commit on), creates THREADS threads and appends to all of them
concurrently, one event per append, forever. After each append returns it prints
`ack <thread_id> <seq>`; every 50 appends it prints `stats <paid> <appends> <grouped>`,
where `paid` is what the appends cost the database: SQLite's commits (fsyncs), PostgreSQL's
append round trips. The tests SIGKILL it (group_kill.py). Never started by hand.
"""

from __future__ import annotations

import asyncio
import sys

from group_kill import make_threads  # next to this file

from threadline.events import Thread, ToolResult, utcnow
from threadline.stores import SQLiteStore, Store, open_store
from threadline.stores.grouping import AppendStats
from threadline.stores.postgres import PostgresStore


def stats_line(store: Store) -> str:
    """`stats <paid> <appends> <grouped>`: paid is what the appends cost the database."""
    stats: AppendStats
    if isinstance(store, SQLiteStore):
        stats, paid = store.stats, store.stats.commits
    elif isinstance(store, PostgresStore):
        stats, paid = store.stats, store.stats.append_round_trips
    else:
        raise TypeError(f"no group commit in {type(store).__name__}")
    return f"stats {paid} {stats.appends} {stats.grouped}\n"


async def writer(store: Store, thread: Thread, out: list[int]) -> None:
    seq = thread.next_seq
    while True:
        event = ToolResult(seq=seq, at=utcnow(), call_id=f"c{seq}", tool="w", result=seq)
        await store.append(thread.id, [event], expected_seq=seq)
        sys.stdout.write(f"ack {thread.id} {seq}\n")
        sys.stdout.flush()
        seq += 1
        out[0] += 1
        if out[0] % 50 == 0:
            sys.stdout.write(stats_line(store))
            sys.stdout.flush()
        await asyncio.sleep(0)  # as a model call or a tool would: let the other threads run


async def main(url: str, count: int) -> None:
    store = open_store(url)
    threads = await make_threads(store, count)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    done = [0]
    await asyncio.gather(*(writer(store, t, done) for t in threads))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
