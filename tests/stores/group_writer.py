"""A process of the group-commit kill test: many threads appending at once, each append
acknowledged on stdout only after the store returned from it.

    python group_writer.py DB_PATH THREADS

Creates THREADS threads in a SQLiteStore (synchronous=FULL) and appends to all of them
concurrently, one event per append, forever. After each append returns it prints
`ack <thread_id> <seq>`; every 50 appends it prints `stats <commits> <appends> <grouped>`.
The test SIGKILLs it at a random moment. Started by test_group_commit.py, never by hand.
"""

from __future__ import annotations

import asyncio
import sys

from threadline.events import Thread, ToolResult, UserMessage, utcnow
from threadline.stores import SQLiteStore, new_thread_id


async def writer(store: SQLiteStore, thread: Thread, out: list[int]) -> None:
    seq = thread.next_seq
    while True:
        event = ToolResult(seq=seq, at=utcnow(), call_id=f"c{seq}", tool="w", result=seq)
        await store.append(thread.id, [event], expected_seq=seq)
        sys.stdout.write(f"ack {thread.id} {seq}\n")
        sys.stdout.flush()
        seq += 1
        out[0] += 1
        if out[0] % 50 == 0:
            s = store.stats
            sys.stdout.write(f"stats {s.commits} {s.appends} {s.grouped}\n")
            sys.stdout.flush()
        await asyncio.sleep(0)  # as a model call or a tool would: let the other threads run


async def main(path: str, count: int) -> None:
    store = SQLiteStore(path, synchronous="full")
    threads = []
    for _ in range(count):
        thread = Thread(new_thread_id(), "kill")
        thread.append(UserMessage(seq=0, at=utcnow(), text="go"))
        await store.create(thread)
        threads.append(thread)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    done = [0]
    await asyncio.gather(*(writer(store, t, done) for t in threads))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
