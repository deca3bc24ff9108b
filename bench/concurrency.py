"""Many threads advancing at once in one process on SQLite FULL: commits (fsyncs) per turn.

64 threads are launched (not advanced), then advanced concurrently on one event loop with
`asyncio.gather(runtime.advance(...))`: each runs the 10-turn loop of bench/loop.py (9 calls
of a read-only tool, then a final answer) with the default renderer. Counted:

  * commits per model turn: write transactions the store committed while the threads ran
    (`SQLiteStore.stats`). In WAL mode at synchronous=FULL each commit is one fsync of the
    WAL (a checkpoint adds its own fsyncs now and then, every ~1,000 pages), so this is the
    fsync count without strace. On code without `stats` (the figure before the levers) the
    store's transaction driver is wrapped to count its write transactions instead.
  * the waits of grouped appends (arrival to their group's COMMIT returning): median, 99th
    percentile and longest, against one commit interval: the window plus the mean group
    transaction (BEGIN to COMMIT returning; its COMMIT, the fsync, shown apart). An append
    that arrives while a group commits waits for the rest of that group first, so its bound
    is the later of the window and the group ahead's COMMIT, plus its own transaction; the
    overrun is how much later than that the committer began a group (thread switches), the
    lock wait how long a group's BEGIN IMMEDIATE waited for another writer (this store's
    COMMIT behind the loop).
  * each grouped append against an interval of its own: the window plus its own group's
    transaction once that held the write lock (the longest wait against the mean interval
    above mixes one group's slow fsync into a bound made of the others'): the share of
    appends that waited longer, and the longest wait as a multiple of its own interval.
    Above 1.0 it waited for the group ahead, for another writer's lock, or for a committer
    that began late; at or below, the goal holds for it.
    Beside the group transactions' total time, the committer thread's time on a CPU and
    runnable but waiting for one (Linux /proc schedstat): what a loaded machine adds.
  * every append's wait as its caller sees it ("append returned"): from the call of
    `append` (or `append_behind`) to its return, grouped or not: the group's wait and then
    the event loop's, which resumes the caller only when it comes round to it.
  * the generation-2 (full) garbage collections while the threads advanced and the
    longest of them (`gc.callbacks`): a full collection walks every tracked object on the
    thread that triggered it, here the event loop, so it stalls every thread at once.
  * with --readers N, N tasks read thread summaries (`store.get`) back to back while the
    threads advance, as a server's thread views would: reads done and their median time.

Baseline in the same run: the same 64 threads with group commit off (`group_window=0`).

The process is prepared as `threadline worker` prepares its own: once the first runtime
and agent are set up (the warm-up run), `threadline.settle_heap()` freezes what start-up
made, so full collections no longer walk it (docs/performance.md, "A full collection
stalls every turn"). Each round also runs the grouped threads once with the heap not
frozen (`gc.unfreeze()` before, `settle_heap()` again after), shown as "not frozen";
`--no-settle` runs every round unfrozen, as a process that never called it.

PostgreSQL (`run_postgres`): the same 64 threads on `PostgresStore` (the server at
THREADLINE_TEST_POSTGRES_URL, default the local `test` database, a fresh schema per run),
counting the round trips the store made while the threads ran (`PostgresStore.stats`: a
statement alone is one, a transaction's BEGIN and COMMIT one each, a pipelined group one)
and the waits of every append (arrival in the store to its answer), against the same run
with grouping off (`group_appends=False`); then a new message to each finished thread, all
at once (`Runtime.message`: a load, then an append that makes the thread runnable and
wakes idle workers), and the round trips per message, the append's among them. Skipped,
with the reason, when the server is not reachable or psycopg is not installed.

Run: PYTHONPATH=src python bench/concurrency.py [--rounds 3] [--threads 64] [--window-ms 5]
[--no-settle]
(SQLite; interleaved rounds, grouped and off, the order alternating; the medians of the
rounds at the end; PostgreSQL through bench/overhead.py --only concurrency-pg).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from threadline import Agent, Runtime, SQLiteStore, Thread, settle_heap
from threadline.models.base import Context, ModelOutput, ModelProfile
from threadline.stores import sqlite as sqlite_module

TURNS = 10
CALL = '{"intent": "lookup", "arguments": {"key": "abc"}}'
DONE = '{"intent": "done_for_now", "arguments": {"message": "ABC"}}'
_TAG = re.compile(r"loop #(\d+)")


class PerThreadScript:
    """Instant; counts each thread's turns by the tag in its first message."""

    model_id = "instant"
    profile = ModelProfile()

    def __init__(self) -> None:
        self.turns: Counter[str] = Counter()

    async def request(self, context: Context) -> ModelOutput:
        # A real model call yields to the event loop (it waits for the network); without
        # this the instant model would let one thread run to its end before the next.
        await asyncio.sleep(0)
        found = _TAG.search(context.as_text())
        tag = found.group(1) if found else "?"
        self.turns[tag] += 1
        n = self.turns[tag]
        # A new key each turn: the same call repeated is refused as a loop (loop_guard).
        text = DONE if n >= TURNS else CALL.replace("abc", f"abc{n}")
        return ModelOutput(text=text, model="instant")


class _Counted:
    """Write transactions of a store, from `stats` or by wrapping the driver (older code)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.wrapped = 0
        self._original: Any = None
        if getattr(store, "stats", None) is None:
            self._original = sqlite_module._drive

            def counting(conn: Any, plan: Any, tx: Any) -> Any:
                value = self._original(conn, plan, tx)
                if tx is not sqlite_module.Tx.READ:
                    self.wrapped += 1
                return value

            sqlite_module._drive = counting

    def commits(self) -> int:
        stats = getattr(self.store, "stats", None)
        return stats.commits if stats is not None else self.wrapped

    def restore(self) -> None:
        if self._original is not None:
            sqlite_module._drive = self._original


def _agent(model: PerThreadScript) -> Agent:
    """bench/loop.py's agent (its read-only lookup tool), answering from `model`."""
    from loop import lookup

    return Agent("conc", tools=[lookup], model=model, max_steps=TURNS + 5)


async def _launch(rt: Runtime, threads: int) -> list[Thread]:
    """`threads` threads launched one by one, not advanced: all start together later."""
    (agent,) = rt.agents.values()
    return [
        await rt.launch(agent, f"look up abc (loop #{i})", advance=False) for i in range(threads)
    ]


def run(tmpdir: Path, threads: int, window: float, readers: int = 0) -> dict[str, float]:
    """One concurrent run; commits per turn, turns per second, the grouped waits."""

    # The runs before left their runtime and store as cyclic garbage (14,000-21,000 objects):
    # collected here, before the clock starts, not by a full collection in the middle of
    # this run. A long-lived worker makes no such garbage (docs/performance.md).
    gc.collect()

    async def go() -> dict[str, float]:
        path = tmpdir / f"conc-{window}-{time.monotonic_ns()}.db"
        try:
            store = SQLiteStore(path, group_window=window)
        except TypeError:  # code before group commit
            store = SQLiteStore(path)
        counted = _Counted(store)
        model = PerThreadScript()
        rt = Runtime(store, agents=[_agent(model)])
        try:
            launched = await _launch(rt, threads)
            before = counted.commits()
            returned = _time_appends(store)
            stop = asyncio.Event()
            reads: list[float] = []
            reading = [
                asyncio.ensure_future(_read(store, [t.id for t in launched], stop, reads))
                for _ in range(readers)
            ]
            started = time.perf_counter()
            with _full_collections() as full:
                done = await asyncio.gather(*(rt.advance(t) for t in launched))
            elapsed = time.perf_counter() - started
            commits = counted.commits() - before
            committer = _committer_schedule()
            stop.set()
            await asyncio.gather(*reading)
        finally:
            counted.restore()
            await store.close()
        if any(t.status != "done" for t in done):
            raise RuntimeError("a concurrent thread did not finish")
        turns = sum(model.turns.values())
        stats = getattr(store, "stats", None)
        waits = sorted(getattr(stats, "waits", ()))  # grouped appends, arrival to COMMIT
        groups = getattr(stats, "groups", 0) or 1
        reads.sort()
        returned.sort()
        return {
            "turns": float(turns),
            "commits_per_turn": commits / turns,
            "turns_per_s": turns / elapsed,
            "longest_wait_ms": stats.longest_wait * 1000 if stats is not None else 0.0,
            "p50_wait_ms": _quantile(waits, 0.50) * 1000,
            "p99_wait_ms": _quantile(waits, 0.99) * 1000,
            "p50_return_ms": _quantile(returned, 0.50) * 1000,
            "p99_return_ms": _quantile(returned, 0.99) * 1000,
            "longest_return_ms": (returned[-1] if returned else 0.0) * 1000,
            "commit_ms": getattr(stats, "group_seconds", 0.0) / groups * 1000,
            "fsync_ms": getattr(stats, "commit_seconds", 0.0) / groups * 1000,
            "longest_group_ms": getattr(stats, "longest_group", 0.0) * 1000,
            "overrun_ms": max(0.0, getattr(stats, "longest_overrun", 0.0)) * 1000,
            "lock_ms": getattr(stats, "longest_lock", 0.0) * 1000,
            "over_share": getattr(stats, "over_interval", 0) / max(1, len(waits)),
            "own_intervals": getattr(stats, "longest_in_intervals", 0.0),
            "reads_per_s": len(reads) / elapsed,
            "p50_read_ms": _quantile(reads, 0.50) * 1000,
            "group_total_ms": getattr(stats, "group_seconds", 0.0) * 1000,
            "committer_cpu_ms": committer[0],
            "committer_runq_ms": committer[1],
            "gen2": float(len(full)),
            "longest_gen2_ms": max(full, default=0.0) * 1000,
        }

    return asyncio.run(go())


@contextlib.contextmanager
def _full_collections() -> Iterator[list[float]]:
    """The seconds of each generation-2 garbage collection while the block runs."""
    seconds: list[float] = []
    began = 0.0

    def timing(phase: str, info: dict[str, int]) -> None:
        nonlocal began
        if info["generation"] != 2:
            return
        if phase == "start":
            began = time.perf_counter()
        else:
            seconds.append(time.perf_counter() - began)

    gc.callbacks.append(timing)
    try:
        yield seconds
    finally:
        gc.callbacks.remove(timing)


def _time_appends(store: SQLiteStore) -> list[float]:
    """From now on, every append's seconds as its caller sees them (the call to its return:
    the wait for the group and for the event loop to resume the caller), grouped or not."""
    seconds: list[float] = []

    def timing(append: Any) -> Any:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return await append(*args, **kwargs)
            finally:
                seconds.append(time.monotonic() - started)

        return timed

    store.append = timing(store.append)  # type: ignore[method-assign]
    if hasattr(store, "append_behind"):  # pipelined: returns before durable when alone
        store.append_behind = timing(store.append_behind)  # type: ignore[method-assign]
    return seconds


def _committer_schedule() -> tuple[float, float]:
    """The group committer's thread so far (Linux; zeros elsewhere or before it started):
    milliseconds on a CPU, and runnable but waiting for a CPU (/proc schedstat). The thread
    starts with the first group, after the launches, so this covers the advancing."""
    for thread in threading.enumerate():
        if thread.name.startswith("threadline-group-commit") and thread.native_id:
            try:
                with open(f"/proc/self/task/{thread.native_id}/schedstat") as f:
                    on_cpu, waiting = f.read().split()[:2]
            except OSError:
                break
            return int(on_cpu) / 1e6, int(waiting) / 1e6
    return 0.0, 0.0


async def _read(store: SQLiteStore, ids: list[str], stop: asyncio.Event, out: list[float]) -> None:
    """Read thread summaries back to back until `stop`; each read's seconds into `out`."""
    pick = random.Random(len(out)).choice
    while not stop.is_set():
        started = time.perf_counter()
        await store.get(pick(ids))
        out.append(time.perf_counter() - started)


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


POSTGRES_URL = os.environ.get(
    "THREADLINE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def postgres_unreachable(url: str = POSTGRES_URL) -> str | None:
    """Why PostgreSQL cannot be measured (None: it can)."""
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=3).close()
    except Exception as exc:  # ImportError included: the postgres extra is missing
        return f"PostgreSQL not reachable at {url}: {' '.join(str(exc).split())[:160]}"
    return None


def run_postgres(threads: int, group: bool, url: str = POSTGRES_URL) -> dict[str, float]:
    """One concurrent run on PostgreSQL: round trips per turn, turns per second, waits."""
    import psycopg

    from threadline.stores.postgres import PostgresStore

    schema = f"bench_conc_{os.getpid()}_{time.monotonic_ns() % 10**9}"

    async def go() -> dict[str, float]:
        store = PostgresStore(url, schema=schema, migrate=True, group_appends=group)
        model = PerThreadScript()
        rt = Runtime(store, agents=[_agent(model)])
        try:
            launched = await _launch(rt, threads)
            stats = store.stats
            stats.waits.clear()
            before = (stats.round_trips, stats.append_round_trips, stats.append_commits)
            appends, grouped = stats.appends, stats.grouped
            groups, group_seconds = stats.groups, stats.group_seconds
            started = time.perf_counter()
            done = await asyncio.gather(*(rt.advance(t) for t in launched))
            elapsed = time.perf_counter() - started
            # A new message to each finished thread, all at once: each makes its thread
            # runnable, so its append wakes idle workers (NOTIFY), as a server's would.
            woke = (stats.round_trips, stats.append_round_trips)
            await asyncio.gather(*(rt.message(t.id, "again") for t in done))
            woke = (stats.round_trips - woke[0], stats.append_round_trips - woke[1])
        finally:
            await store.close()
        if any(t.status != "done" for t in done):
            raise RuntimeError("a concurrent thread did not finish")
        turns = sum(model.turns.values())
        waits = sorted(stats.waits)
        return {
            "turns": float(turns),
            "round_trips_per_turn": (stats.round_trips - before[0]) / turns,
            "append_round_trips_per_turn": (stats.append_round_trips - before[1]) / turns,
            "append_commits_per_turn": (stats.append_commits - before[2]) / turns,
            "appends_per_turn": (stats.appends - appends) / turns,
            "grouped_share": (stats.grouped - grouped) / max(1, stats.appends - appends),
            "turns_per_s": turns / elapsed,
            "p50_wait_ms": _quantile(waits, 0.50) * 1000,
            "p99_wait_ms": _quantile(waits, 0.99) * 1000,
            "longest_wait_ms": (waits[-1] if waits else 0.0) * 1000,
            "group_ms": (stats.group_seconds - group_seconds)
            / max(1, stats.groups - groups)
            * 1000,
            "wake_round_trips_per_message": woke[0] / threads,
            "wake_append_round_trips_per_message": woke[1] / threads,
        }

    try:
        return asyncio.run(go())
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


_SHOWN = (
    ("commits_per_turn", "commits/turn", "{:.3f}"),
    ("p50_wait_ms", "median wait ms", "{:.1f}"),
    ("p99_wait_ms", "p99", "{:.1f}"),
    ("longest_wait_ms", "longest", "{:.1f}"),
    ("p50_return_ms", "append returned: median ms", "{:.1f}"),
    ("p99_return_ms", "p99", "{:.1f}"),
    ("longest_return_ms", "longest", "{:.1f}"),
    ("interval_ms", "interval (window + mean group tx)", "{:.1f}"),
    ("commit_ms", "mean group tx", "{:.1f}"),
    ("fsync_ms", "of which COMMIT", "{:.1f}"),
    ("longest_group_ms", "longest group tx", "{:.1f}"),
    ("overrun_ms", "longest overrun", "{:.1f}"),
    ("lock_ms", "longest lock wait", "{:.1f}"),
    ("over_share", "share over own interval", "{:.3f}"),
    ("own_intervals", "longest in own intervals", "{:.2f}"),
    ("group_total_ms", "all group tx", "{:.0f}"),
    ("committer_cpu_ms", "committer on a CPU", "{:.0f}"),
    ("committer_runq_ms", "waiting for a CPU", "{:.0f}"),
    ("gen2", "full collections", "{:.0f}"),
    ("longest_gen2_ms", "longest", "{:.1f}"),
    ("turns_per_s", "turns/s", "{:.0f}"),
)


def _shown(row: dict[str, float], readers: int) -> str:
    """A round's (or the medians') figures as printed, with the readers' when there were."""
    shown = ", ".join(f"{label} {fmt.format(row[k])}" for k, label, fmt in _SHOWN)
    if readers:
        shown += f", {row['reads_per_s']:.0f} reads/s (median {row['p50_read_ms']:.1f} ms)"
    return shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--window-ms", type=float, default=5.0)
    parser.add_argument("--readers", type=int, default=0, help="tasks reading summaries")
    parser.add_argument(
        "--no-settle", action="store_true", help="never freeze the heap (settle_heap)"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/loop.py
    window = args.window_ms / 1000
    rows: list[dict[str, float]] = []
    unfrozen: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        # Not reported: the first run in a process pays one-time costs (imports, caches: a
        # single task step of 40 ms was seen), which would fall in the first round's figures.
        run(Path(tmp), 8, window)
        settled = not args.no_settle
        if settled:
            settle_heap()  # as `threadline worker` does once it is ready
        for r in range(1, args.rounds + 1):
            # The order alternates between rounds: the first run of a round tends to come
            # out ahead on a shared machine.
            if settled and not r % 2:
                unfrozen.append(_run_unfrozen(Path(tmp), args.threads, window, args.readers))
            if r % 2:
                grouped = run(Path(tmp), args.threads, window, args.readers)
                alone = run(Path(tmp), args.threads, 0.0, args.readers)
            else:
                alone = run(Path(tmp), args.threads, 0.0, args.readers)
                grouped = run(Path(tmp), args.threads, window, args.readers)
            if settled and r % 2:
                unfrozen.append(_run_unfrozen(Path(tmp), args.threads, window, args.readers))
            grouped["interval_ms"] = args.window_ms + grouped["commit_ms"]
            grouped["throughput_vs_off"] = grouped["turns_per_s"] / alone["turns_per_s"]
            grouped["off_commits_per_turn"] = alone["commits_per_turn"]
            rows.append(grouped)
            print(
                f"round {r}/{args.rounds}: {_shown(grouped, args.readers)}, throughput vs off "
                f"{grouped['throughput_vs_off']:.2f}x (off: {alone['turns_per_s']:.0f} turns/s, "
                f"{alone['commits_per_turn']:.3f} commits/turn)"
                + (f"; not frozen: {_unfrozen(unfrozen[-1])}" if unfrozen else ""),
                flush=True,
            )
    med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    heap = "heap frozen" if settled else "heap not frozen (--no-settle)"
    print(
        f"median of {args.rounds} rounds ({args.threads} threads, window {args.window_ms:g} ms, "
        f"{heap}): {_shown(med, args.readers)}, throughput vs off "
        f"{med['throughput_vs_off']:.2f}x; longest / interval "
        f"{statistics.median(r['longest_wait_ms'] / r['interval_ms'] for r in rows):.1f}, "
        f"p99 / interval {statistics.median(r['p99_wait_ms'] / r['interval_ms'] for r in rows):.1f}"
    )
    if unfrozen:
        med = {k: statistics.median(row[k] for row in unfrozen) for k in unfrozen[0]}
        print(f"median of {args.rounds} rounds, heap not frozen: {_unfrozen(med)}")


def _run_unfrozen(tmpdir: Path, threads: int, window: float, readers: int) -> dict[str, float]:
    """`run` with the heap not frozen (`gc.unfreeze()`), then frozen again as before."""
    gc.unfreeze()
    try:
        return run(tmpdir, threads, window, readers)
    finally:
        settle_heap()


_UNFROZEN = {
    "p50_wait_ms",
    "p99_wait_ms",
    "longest_wait_ms",
    "p50_return_ms",
    "p99_return_ms",
    "longest_return_ms",
    "gen2",
    "longest_gen2_ms",
    "turns_per_s",
}


def _unfrozen(row: dict[str, float]) -> str:
    """The figures of a grouped run with the heap not frozen: its waits, its full
    collections and its throughput."""
    return ", ".join(f"{label} {fmt.format(row[k])}" for k, label, fmt in _SHOWN if k in _UNFROZEN)


__all__ = ["postgres_unreachable", "run", "run_postgres"]

if __name__ == "__main__":
    main()
