"""A writer process for the cross-process race test: appends until the thread is full.

    python race_writer.py STORE_URL THREAD_ID TARGET NAME BARRIER_DIR

Each round it reads the thread's next seq and appends one event carrying NAME at it;
prints `wins conflicts` at the end. Started by test_processes.py, never by hand.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from threadline.errors import AppendConflict
from threadline.events import ToolResult, utcnow
from threadline.stores import open_store


async def main(url: str, thread_id: str, target: int, name: str, barrier: Path) -> None:
    store = open_store(url)
    await store.ping()
    (barrier / f"ready-{name}").touch()
    while not (barrier / "go").exists():  # noqa: ASYNC110 - all writers start together
        await asyncio.sleep(0.002)
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
    url, thread_id, target, name, barrier = sys.argv[1:6]
    asyncio.run(main(url, thread_id, int(target), name, Path(barrier)))
