"""Run on a test host: lock one thread's row inside a store transaction, as a worker cut
off in the middle of an append does, then sleep (the test cuts this host's link).

    python locker.py URL SCHEMA THREAD_ID    # prints "locked" once the row lock is held
"""

from __future__ import annotations

import asyncio
import sys

from threadline.stores.postgres import PostgresStore


async def main(url: str, schema: str, thread_id: str) -> None:
    store = PostgresStore(url, schema=schema)
    async with store._conn() as conn, conn.transaction():  # the store's own sessions
        await conn.execute("SELECT 1 FROM threads WHERE id = %s FOR UPDATE", (thread_id,))
        print("locked", flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
