"""Crash test: worker processes killed with SIGKILL at random moments lose nothing and never
run a non-idempotent side effect twice.

A supervisor launches THREADS threads of the shop agent (lookup -> charge -> send_receipt ->
done), keeps WORKERS worker processes running, and SIGKILLs a random one every so often,
starting a replacement each time, until every thread has finished or escalated. Then it
checks, from the database:

* every thread is `done` or `escalated`;
* every thread's events are dense (seq 0..n-1, nothing lost or duplicated) and load;
* `charge` (not idempotent) ran at most once per call, and a thread that escalated did so
  because a charge may have run (`tool_started` without an outcome), never silently;
* every re-run of `send_receipt` (idempotent) carried the same idempotency key;
* kills > 0 and resumptions (threads leased again after their worker died) > 0.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from threadline import Runtime
from threadline.events import Status
from threadline.stores.postgres import PostgresStore
from threadline.tools import idempotency_key

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from shop import SIDE_TABLE, agent  # noqa: E402

THREADS = 200
WORKERS = 4
LEASE_TTL = 1.5
# The run fails when no thread finishes for this long (a stall), not after a fixed total:
# on a loaded machine the same run simply takes longer.
STALL = 90.0


def start_worker(env: dict[str, str], logs: Path, n: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "worker_main.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(logs / f"worker-{n}.log", "wb"),  # noqa: SIM115 - owned by the child
    )


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(900)
async def test_sigkilled_workers_lose_nothing_and_never_double_charge(
    postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("CRASH_SEED", time.time()))
    rng = random.Random(seed)  # the kill schedule; rerun one with CRASH_SEED=<seed>
    store = PostgresStore(postgres_url, schema=pg_schema, migrate=True)
    await store.ping()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{pg_schema}"')
        conn.execute(SIDE_TABLE)
    runtime = Runtime(store, agents=[agent])
    ids = [(await runtime.launch(agent, f"order {i}", advance=False)).id for i in range(THREADS)]

    env = {
        **os.environ,
        "CRASH_DB_URL": postgres_url,
        "CRASH_SCHEMA": pg_schema,
        "LEASE_TTL": str(LEASE_TTL),
        "CONCURRENCY": "4",
    }
    started = 0
    workers = []
    for _ in range(WORKERS):
        workers.append(start_worker(env, tmp_path, started))
        started += 1
    kills = 0
    begin = last_progress = time.monotonic()
    last_open = open_at_kill = THREADS
    try:
        while True:
            await asyncio.sleep(rng.uniform(0.2, 0.8))
            open_ = await _unfinished(store)
            if open_ == 0:
                break
            now = time.monotonic()
            if open_ < last_open:
                last_open, last_progress = open_, now
            elif now - last_progress > STALL:
                pytest.fail(
                    f"no thread finished for {STALL:.0f}s ({open_} still open, {kills} kills); "
                    f"worker logs in {tmp_path}"
                )
            if open_ == open_at_kill:
                # Nothing finished since the last kill: on a slow machine the replacement
                # may still be starting, and killing it again would only test start-up.
                continue
            open_at_kill = open_
            victim = rng.randrange(len(workers))
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait()
            kills += 1
            workers[victim] = start_worker(env, tmp_path, started)
            started += 1
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=20)
            except subprocess.TimeoutExpired:
                w.kill()
    elapsed = time.monotonic() - begin

    # -- every thread finished or escalated, with dense events ---------------------------
    statuses: dict[str, Status] = {}
    escalated_reasons = []
    for thread_id in ids:
        thread = await store.load(thread_id)  # raises if any row is corrupt
        assert [e.seq for e in thread.events] == list(range(len(thread.events)))
        assert (await store.get(thread_id)).next_seq == len(thread.events)
        statuses[thread_id] = thread.status
        if thread.status == Status.ESCALATED:
            escalated_reasons.append(thread.events[-1].reason)  # type: ignore[union-attr]
    assert set(statuses.values()) <= {Status.DONE, Status.ESCALATED}, statuses

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{pg_schema}"')
        dupes = conn.execute(
            "SELECT e.seq, count(*) FROM events e GROUP BY e.thread_id, e.seq HAVING count(*) > 1"
        ).fetchall()
        charges = conn.execute(
            "SELECT thread_id, call_id, count(*) FROM executions WHERE tool = 'charge' "
            "GROUP BY thread_id, call_id"
        ).fetchall()
        receipts = conn.execute(
            "SELECT thread_id, call_id, array_agg(DISTINCT idempotency_key), count(*) "
            "FROM executions WHERE tool = 'send_receipt' GROUP BY thread_id, call_id"
        ).fetchall()
        resumptions = conn.execute("SELECT count(*) FROM threads WHERE lease_token > 1").fetchone()[
            0
        ]
        reruns = conn.execute(
            "SELECT count(*) FROM events WHERE kind = 'tool_started' "
            "AND (body->>'attempt')::int > 1"
        ).fetchone()[0]
        maybe_ran = conn.execute(
            "SELECT count(*) FROM events WHERE kind = 'tool_started' AND "
            "NOT EXISTS (SELECT 1 FROM events o WHERE o.thread_id = events.thread_id AND "
            "o.kind IN ('tool_result', 'tool_error') AND o.body->>'call_id' = "
            "events.body->>'call_id')"
        ).fetchone()[0]
    assert dupes == []

    # -- side effects: charge at most once per call; receipts re-run with one key --------
    assert all(count == 1 for _, _, count in charges), [c for c in charges if c[2] > 1]
    charged = {thread_id for thread_id, _, _ in charges}
    for thread_id, status in statuses.items():
        if status == Status.DONE:
            assert thread_id in charged  # a finished order was charged (exactly once)
    for thread_id, call_id, keys, _count in receipts:
        assert keys == [idempotency_key(thread_id, call_id)]
    receipt_dupes = sum(count - 1 for *_, count in receipts)
    # Escalations only ever come from a charge that may have run.
    assert all("charge@1 may have run" in r for r in escalated_reasons), escalated_reasons

    escalations = len(escalated_reasons)
    print(
        f"\ncrash test: {THREADS} threads, {WORKERS} workers, {kills} SIGKILLs, "
        f"{started} worker processes in {elapsed:.1f}s; resumptions={resumptions} "
        f"(threads leased again after a kill), idempotent re-runs={reruns} "
        f"(duplicate receipt executions={receipt_dupes}, one key each), "
        f"escalations={escalations} (non-idempotent charge maybe ran), "
        f"done={sum(s == Status.DONE for s in statuses.values())}, "
        f"open tool_started={maybe_ran}, seed={seed}"
    )
    assert kills > 0
    assert resumptions > 0
    assert escalations + sum(s == Status.DONE for s in statuses.values()) == THREADS
    await store.close()


async def _unfinished(store: PostgresStore) -> int:
    total = 0
    for status in (
        Status.RUNNING,
        Status.WAITING,
        Status.AWAITING_APPROVAL,
        Status.AWAITING_HUMAN,
        Status.PAUSED,
    ):
        cursor = None
        while True:
            page = await store.list(status=status, limit=500, cursor=cursor)
            total += len(page.items)
            cursor = page.cursor
            if cursor is None:
                break
    return total
