"""A process of the PostgreSQL group-commit kill test: many threads appending at once, each
append acknowledged on stdout only after the store returned from it.

    python pg_group_writer.py STORE_URL THREADS

Creates THREADS threads in a PostgresStore (group commit on) and appends to all of them
concurrently, one event per append, forever. After each append returns it prints
`ack <thread_id> <seq>`; every 50 appends it prints `stats <append round trips> <appends>
<grouped>`. The test SIGKILLs it at a random moment. Started by test_postgres_group.py,
never by hand.
"""

from __future__ import annotations

import asyncio
import sys

from threadline.events import Thread, ToolResult, UserMessage, utcnow
from threadline.stores import new_thread_id
from threadline.stores.postgres import PostgresStore


async def writer(store: PostgresStore, thread: Thread, out: list[int]) -> None:
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
            sys.stdout.write(f"stats {s.append_round_trips} {s.appends} {s.grouped}\n")
            sys.stdout.flush()
        await asyncio.sleep(0)  # as a model call or a tool would: let the other threads run


async def main(url: str, count: int) -> None:
    store = PostgresStore.from_url(url)
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
