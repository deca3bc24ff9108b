"""A writer process for the cross-process race test: appends until the thread is full.

    python race_writer.py STORE_URL THREAD_ID TARGET NAME START_AT

Each round it reads the thread's next seq and appends one event carrying NAME at it;
prints `wins conflicts` at the end. Started by test_processes.py, never by hand.
"""

from __future__ import annotations

import asyncio
import sys
import time

from threadline.errors import AppendConflict
from threadline.events import ToolResult, utcnow
from threadline.stores import open_store


async def main(url: str, thread_id: str, target: int, name: str, start_at: float) -> None:
    store = open_store(url)
    await store.ping()
    await asyncio.sleep(max(0.0, start_at - time.time()))  # all writers start together
    wins = conflicts = 0
    while True:
        seq = (await store.get(thread_id)).next_seq
        if seq >= target:
            break
        event = ToolResult(seq=seq, at=utcnow(), call_id=f"c{seq}", tool="w", result=name)
        try:
            await store.append(thread_id, [event], expected_seq=seq)
            wins += 1
        except AppendConflict:
            conflicts += 1
    await store.close()
    print(wins, conflicts)


if __name__ == "__main__":
    url, thread_id, target, name, start_at = sys.argv[1:6]
    asyncio.run(main(url, thread_id, int(target), name, float(start_at)))
