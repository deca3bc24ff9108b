"""A process of the group-commit kill tests: many threads appending at once, each append
acknowledged on stdout only after the store returned from it.

    python group_writer.py STORE_URL THREADS [slow]

Opens the store at STORE_URL (`sqlite:///path.db`: synchronous=FULL by default;
`postgresql://...`: group commit on), creates THREADS threads and appends to all of them
concurrently, one event per append, forever. After each append returns it prints
`ack <thread_id> <seq>`; every 50 appends it prints `stats <paid> <appends> <grouped>`,
where `paid` is what the appends cost the database: SQLite's commits (fsyncs), PostgreSQL's
append round trips. `slow` (SQLite): the group commit takes the disk for slow (its smoothed
`COMMIT` time pinned above half the window), so every group's `COMMIT` runs behind the
loop, and every 50 appends it prints `behind <groups>` too. The tests SIGKILL it
(group_kill.py). Never started by hand.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from group_kill import make_threads  # next to this file

from threadline.events import Thread, ToolResult, utcnow
from threadline.stores import SQLiteStore, Store, open_store
from threadline.stores.group_commit import GroupCommit
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
            if BEHIND:
                sys.stdout.write(f"behind {BEHIND[0]}\n")
            sys.stdout.flush()
        await asyncio.sleep(0)  # as a model call or a tool would: let the other threads run


BEHIND: list[int] = []  # groups whose COMMIT went behind the loop (`slow`)


def take_the_disk_for_slow() -> None:
    """Every group's `COMMIT` behind the loop: the smoothed `COMMIT` time kept at 1 s."""
    record, behind = GroupCommit._record, GroupCommit._commit_behind
    BEHIND.append(0)

    def pinned(self: GroupCommit, *args: Any, **kwargs: Any) -> None:
        record(self, *args, **kwargs)
        self._fsync = 1.0

    def counted(self: GroupCommit, *args: Any) -> None:
        BEHIND[0] += 1
        behind(self, *args)

    GroupCommit._record = pinned  # type: ignore[method-assign]
    GroupCommit._commit_behind = counted  # type: ignore[method-assign]


async def main(url: str, count: int, slow: bool = False) -> None:
    store = open_store(url)
    if slow:
        take_the_disk_for_slow()
        assert isinstance(store, SQLiteStore) and store._group is not None
        store._group._fsync = 1.0
    threads = await make_threads(store, count)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    done = [0]
    await asyncio.gather(*(writer(store, t, done) for t in threads))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:] == ["slow"]))
