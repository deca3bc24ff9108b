"""Lease safety: a worker frozen (SIGSTOP) past its lease, then continued (SIGCONT), cannot
append. Another holder took the thread meanwhile; the frozen worker's append is refused
with LeaseLost and the thread is exactly as the new holder left it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from threadline import Runtime
from threadline.errors import LeaseLost
from threadline.events import ToolResult, utcnow
from threadline.stores.postgres import PostgresStore

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from shop import SIDE_TABLE, agent  # noqa: E402

LEASE_TTL = 1.0


async def _wait_for(predicate, what: str, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(seconds / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_frozen_worker_cannot_append_after_its_lease_expired(
    postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    store = PostgresStore(postgres_url, schema=pg_schema, migrate=True)
    await store.ping()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{pg_schema}"')
        conn.execute(SIDE_TABLE)
    runtime = Runtime(store, agents=[agent])
    thread = await runtime.launch(agent, "hold", advance=False)

    env = {
        **os.environ,
        "CRASH_DB_URL": postgres_url,
        "CRASH_SCHEMA": pg_schema,
        "LEASE_TTL": str(LEASE_TTL),
        "CONCURRENCY": "1",
        "HOLD_SECONDS": "1.5",
    }
    log = tmp_path / "frozen.log"
    worker = subprocess.Popen(  # noqa: ASYNC220 - a plain child process, signalled below
        [sys.executable, str(HERE / "worker_main.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=open(log, "wb"),  # noqa: SIM115, ASYNC230 - owned by the child
    )
    try:

        async def inside_hold() -> bool:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                conn.execute(f'SET search_path TO "{pg_schema}"')
                return bool(conn.execute("SELECT count(*) FROM executions").fetchone()[0])

        await _wait_for(inside_hold, "the worker to enter the tool")
        os.kill(worker.pid, signal.SIGSTOP)  # frozen mid-tool, holding the lease
        frozen = await store.get(thread.id)
        assert frozen.lease_owner is not None
        await asyncio.sleep(LEASE_TTL + 0.5)

        # The lease lapsed: another worker (this test) takes the thread.
        (mine,) = await store.lease("the-other-worker", ttl=60)
        assert mine.thread_id == thread.id
        before = await store.load(thread.id)
        assert before.events[-1].kind == "tool_started"

        os.kill(worker.pid, signal.SIGCONT)
        await _wait_for(lambda: _log_says(log, "lost the lease"), "the refused append")
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    stats = json.loads(out.decode().strip().splitlines()[-1])
    assert stats["lost"] == 1 and stats["advanced"] == 0  # its append was refused

    after = await store.load(thread.id)
    assert [e.model_dump() for e in after.events] == [e.model_dump() for e in before.events]
    summary = await store.get(thread.id)
    assert summary.lease_owner == "the-other-worker" and summary.lease_expires is not None

    # The frozen worker's old lease is refused here too; the new holder can still write.
    stale = type(mine)(thread.id, frozen.lease_owner, mine.expires, mine.token - 1)
    call_id = after.events[-1].call_id  # type: ignore[union-attr]
    result = ToolResult(
        seq=after.next_seq, at=utcnow(), call_id=call_id, tool="hold", result="held"
    )
    with pytest.raises(LeaseLost):
        await store.append(thread.id, [result], expected_seq=after.next_seq, lease=stale)
    await store.append(thread.id, [result], expected_seq=after.next_seq, lease=mine)
    assert (await store.get(thread.id)).next_seq == after.next_seq + 1
    await store.close()


async def _log_says(path: Path, text: str) -> bool:
    return text in path.read_text(errors="replace")  # noqa: ASYNC240 - a tiny log file
