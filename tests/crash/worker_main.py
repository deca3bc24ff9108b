"""One worker process of the crash tests (started by the test supervisor, never by hand).

    python worker_main.py  (reads CRASH_DB_URL, CRASH_SCHEMA, LEASE_TTL, CONCURRENCY)

Runs a `threadline.worker.Worker` on the shop agent until SIGTERM/SIGINT, then prints its
stats as one JSON line on stdout. SIGKILL, of course, prints nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from shop import agent  # noqa: E402

from threadline import Runtime  # noqa: E402
from threadline.stores.postgres import PostgresStore  # noqa: E402
from threadline.worker import Worker  # noqa: E402


async def main() -> None:
    store = PostgresStore(os.environ["CRASH_DB_URL"], schema=os.environ["CRASH_SCHEMA"], max_size=4)
    runtime = Runtime(store, agents=[agent])
    worker = Worker(
        runtime,
        concurrency=int(os.environ.get("CONCURRENCY", "4")),
        lease_ttl=float(os.environ.get("LEASE_TTL", "1.5")),
        poll_interval=0.2,
        shutdown_timeout=10,
    )
    worker.install_signal_handlers()
    print("ready", flush=True)
    stats = await worker.run()
    await store.close()
    print(json.dumps(dataclasses.asdict(stats)), flush=True)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(levelname)s %(message)s",
    )
    asyncio.run(main())
