"""Horizontal scaling: completed threads/s and steps/s for 1, 2, 4 and 8 worker processes
on PostgreSQL, and one worker on SQLite, with an instant scripted model.

Each configuration gets a fresh database (a PostgreSQL schema, or a SQLite file) holding
THREADS runnable threads of a small agent (lookup -> note (side effects, idempotent) ->
done: about 7 appends and 11 events per thread). The worker processes start, connect and
wait at a barrier; the clock runs from the barrier until every thread is done. Ratios are
against one PostgreSQL worker measured in the same run.

CPU seconds are split between the worker processes and the PostgreSQL server processes
(from /proc), which shows where a 2-core machine runs out; commits per second and commits
per WAL fsync (from pg_stat_wal and pg_stat_database, server-wide: other users of the
server count too) show whether durable commits are the ceiling; the 1-minute load average
at the start of each run shows whether other work on the machine competed for the cores.

Each configuration runs `--repeat` times (default 2) and the best run is reported: on a
shared machine the best run is the one least disturbed by other work.

Run: python bench/scale.py [--threads 300] [--concurrency 4] [--workers 1,2,4,8] [--repeat 2]
     (PostgreSQL from THREADLINE_TEST_POSTGRES_URL, default the local `test` database)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from threadline import Agent, Runtime, tool
from threadline.events import Thread
from threadline.models.base import Context, Message
from threadline.stores import Store, open_store
from threadline.testing import FunctionModel, intent
from threadline.tools import ToolContext

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


# -- the agent (instant model, trivial tools) ----------------------------------------------


@tool
def lookup(order: str) -> dict[str, Any]:
    """Look an order up."""
    return {"order": order, "total": 42}


@tool(side_effects=True, idempotent=True)
def note(order: str, ctx: ToolContext) -> str:
    """Write a note (side effects: tool_started is checkpointed first)."""
    return f"noted {order} {ctx.idempotency_key[:8]}"


def outline(agent: Agent, thread: Thread) -> Context:
    return Context(
        system="",
        messages=(
            Message(
                "user",
                " ".join(
                    f"{e.tool}_result" if e.kind == "tool_result" else e.kind for e in thread.events
                ),
            ),
        ),
    )


def script(context: Context) -> object:
    text = context.as_text()
    if "lookup_result" not in text:
        return intent("lookup", order="o-1")
    if "note_result" not in text:
        return intent("note", order="o-1")
    return intent("done_for_now", message="done")


agent = Agent("bench", tools=[lookup, note], model=FunctionModel(script), renderer=outline)


# -- worker mode ---------------------------------------------------------------------------


async def worker_main(url: str, barrier: Path, concurrency: int) -> None:
    from threadline.worker import Worker

    store = open_store(url)
    await store.ping()
    (barrier / f"ready-{os.getpid()}").touch()
    while not (barrier / "go").exists():  # noqa: ASYNC110 - a start barrier across processes
        await asyncio.sleep(0.005)
    cpu_at_go = time.process_time()  # count the work, not the imports and connecting
    worker = Worker(
        Runtime(store, agents=[agent]), concurrency=concurrency, lease_ttl=30, poll_interval=0.05
    )
    worker.install_signal_handlers()
    stats = await worker.run()
    await store.close()
    print(json.dumps({**vars(stats), "cpu_s": time.process_time() - cpu_at_go}), flush=True)


# -- supervisor ----------------------------------------------------------------------------


def postgres_cpu_seconds() -> float:
    """utime + stime of every process named `postgres` (the server and its backends)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().split()
        except OSError:
            continue
        if fields[1] == "(postgres)":
            total += (int(fields[13]) + int(fields[14])) / tick
    return total


_STEP_KINDS = frozenset({"model_call", "tool_result", "tool_error", "done", "escalated"})


def wal_counters(url: str) -> tuple[int, int] | None:
    """(WAL fsyncs, commits) of the whole server and database, or None off PostgreSQL."""
    if not url.startswith("postgres"):
        return None
    import psycopg

    base = url.split("?")[0]
    with psycopg.connect(base, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT wal_sync FROM pg_stat_wal), (SELECT xact_commit "
            "FROM pg_stat_database WHERE datname = current_database())"
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else None


async def count_done(store: Store) -> int:
    done, cursor = 0, None
    while True:
        page = await store.list(status="done", limit=1000, cursor=cursor)
        done += len(page.items)
        cursor = page.cursor
        if cursor is None:
            return done


async def run_config(url: str, workers: int, threads: int, concurrency: int) -> dict[str, Any]:
    store = open_store(url)
    runtime = Runtime(store, agents=[agent])
    for i in range(threads):
        await runtime.launch(agent, f"order {i}", advance=False)
    barrier = Path(tempfile.mkdtemp(prefix="tl-scale-"))
    procs = [
        subprocess.Popen(  # noqa: ASYNC220 - plain child processes
            [sys.executable, __file__, "--worker", url, str(barrier), str(concurrency)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    while len(list(barrier.glob("ready-*"))) < workers:  # noqa: ASYNC240
        if any(p.poll() is not None for p in procs):
            raise SystemExit("a worker died while starting")
        await asyncio.sleep(0.02)
    load_before = os.getloadavg()[0]
    pg_before = postgres_cpu_seconds()
    wal_before = wal_counters(url)
    started = time.perf_counter()
    (barrier / "go").touch()
    while await count_done(store) < threads:  # noqa: ASYNC110 - polling the database
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    pg_cpu = postgres_cpu_seconds() - pg_before
    wal_after = wal_counters(url)
    fsyncs = commits = 0
    if wal_before and wal_after:
        fsyncs, commits = wal_after[0] - wal_before[0], wal_after[1] - wal_before[1]
    for p in procs:
        p.terminate()
    stats = [json.loads(p.communicate(timeout=30)[0].strip().splitlines()[-1]) for p in procs]
    worker_cpu = sum(s["cpu_s"] for s in stats)
    events = sum(s["steps"] for s in stats)
    # A step is one performed decision: a model call, a tool run or the finish.
    steps = 0
    for summary in (await store.list(limit=threads + 1)).items:
        thread = await store.load(summary.id)
        steps += sum(e.kind in _STEP_KINDS for e in thread.events)
    await store.close()
    return {
        "workers": workers,
        "threads": threads,
        "seconds": elapsed,
        "threads_per_s": threads / elapsed,
        "steps_per_s": steps / elapsed,
        "steps": steps,
        "events": events,
        "worker_cpu_s": worker_cpu,
        "postgres_cpu_s": pg_cpu,
        "load_1m": load_before,
        "commits_per_s": commits / elapsed,
        "commits_per_fsync": commits / fsyncs if fsyncs else 0.0,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="runs per configuration; the best is reported (shared machines)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    base = os.environ.get("THREADLINE_TEST_POSTGRES_URL", DEFAULT_PG)

    import psycopg

    results: list[tuple[str, dict[str, Any]]] = []
    for n in [int(x) for x in args.workers.split(",")]:
        runs = []
        for _ in range(args.repeat):
            schema = f"tl_bench_{uuid.uuid4().hex[:8]}"
            url = f"{base}{'&' if '?' in base else '?'}schema={schema}&migrate=auto&pool_max=4"
            try:
                runs.append(await run_config(url, n, args.threads, args.concurrency))
            finally:
                with psycopg.connect(base, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        results.append(("postgres", max(runs, key=lambda r: r["threads_per_s"])))
        print(
            f"postgres x{n}: {[round(r['threads_per_s'], 1) for r in runs]} threads/s",
            file=sys.stderr,
        )
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            runs.append(await run_config(url, 1, args.threads, args.concurrency))
    results.append(("sqlite", max(runs, key=lambda r: r["threads_per_s"])))

    base_tps = next(
        r["threads_per_s"] for kind, r in results if kind == "postgres" and r["workers"] == 1
    )
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{args.threads} threads, {args.concurrency} concurrent per worker, "
        f"{os.cpu_count()} CPUs"
    )
    for col in (
        "store",
        "workers",
        "seconds",
        "threads/s",
        "steps/s",
        "vs 1 pg worker",
        "worker CPU s",
        "postgres CPU s",
        "commits/s",
        "commits/fsync",
        "load 1m",
    ):
        table.add_column(col, justify="right")
    for kind, r in results:
        table.add_row(
            kind,
            str(r["workers"]),
            f"{r['seconds']:.2f}",
            f"{r['threads_per_s']:.1f}",
            f"{r['steps_per_s']:.0f}",
            f"{r['threads_per_s'] / base_tps:.2f}x",
            f"{r['worker_cpu_s']:.1f}",
            f"{r['postgres_cpu_s']:.1f}" if kind == "postgres" else "-",
            f"{r['commits_per_s']:.0f}" if kind == "postgres" else "-",
            f"{r['commits_per_fsync']:.1f}" if kind == "postgres" else "-",
            f"{r['load_1m']:.1f}",
        )
    Console(width=150).print(table)
    if args.json:
        args.json.write_text(json.dumps([{"store": k, **r} for k, r in results], indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        asyncio.run(worker_main(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])))
    else:
        asyncio.run(main())
