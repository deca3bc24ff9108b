"""Operations commands: worker, db migrate/status, threads stuck/retry/prune/export/import.

    threadline worker --agent app.py:agent --concurrency 8 [--metrics-port 9464]
    threadline db migrate            # PostgreSQL: apply numbered migrations (SQLite: automatic)
    threadline db status
    threadline threads stuck         # expired leases, unworked threads, waits past due
    threadline threads retry ID      # break the lease / resume / wake now
    threadline threads prune --older 30d --status done [--dry-run]
    threadline threads export [-o threads.jsonl] [--status done]
    threadline threads import threads.jsonl [--skip-existing]

Every command takes `--store URL` to act on another store than THREADLINE_STORE (export
from SQLite, import into PostgreSQL).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..bootstrap import chosen_agents, open_runtime
from ..errors import (
    ConfigError,
    CorruptEvent,
    InvalidAction,
    MissingExtraError,
    StoreError,
    ThreadNotFound,
)
from ..events import Status, Thread, WaitTimedOut, utcnow
from ..observability.metrics import RuntimeMetrics
from ..runtime import Runtime
from ..stores import SQLStore, Store, ThreadSummary, open_store
from ..worker import stuck_threads, summaries
from .common import (
    LockedOpt,
    ServedAgentsOpt,
    app,
    command,
    console,
    err_console,
    fail,
    run_async,
    settings,
    settle,
    threads_app,
)

__all__ = ["parse_age"]

db_app = typer.Typer(help="The database schema: migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")

StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="Store URL (default: THREADLINE_STORE)."),
]


def _store(url: str | None) -> Store:
    return open_store(url or settings().store)


def parse_age(text: str) -> timedelta:
    """`30d`, `12h`, `15m`, `90s`, `2w` (or a combination like `1d12h`) as a timedelta."""
    units = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    compact = re.sub(r"\s", "", text.lower())
    if not re.fullmatch(r"(?:\d+(?:\.\d+)?[wdhms])+", compact):
        raise ConfigError(f"age {text!r} must look like 30d, 12h, 15m, 90s or 1d12h")
    total = timedelta()
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)([wdhms])", compact):
        total += timedelta(**{units[unit]: float(number)})
    return total


# -- worker --------------------------------------------------------------------------------


@command(app)
def worker(
    agent: ServedAgentsOpt = None,
    concurrency: Annotated[int, typer.Option(help="Threads advanced at once.")] = 4,
    lease_ttl: Annotated[
        float,
        typer.Option(
            help="Seconds a lease lasts without a heartbeat (the time a "
            "crashed worker's threads wait before another resumes them)."
        ),
    ] = 30.0,
    poll: Annotated[float, typer.Option(help="Seconds between polls when idle.")] = 1.0,
    shutdown_timeout: Annotated[
        float, typer.Option(help="On SIGTERM/SIGINT, seconds to let current steps finish.")
    ] = 30.0,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve this worker's Prometheus metrics at :PORT/metrics."),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Interface for --metrics-port (0.0.0.0 for a remote scraper).")
    ] = "127.0.0.1",
    locked: LockedOpt = False,
) -> None:
    """Lease runnable threads and advance them until SIGTERM/SIGINT (scale by running more)."""
    import logging

    from ..worker import Worker

    agents = chosen_agents(agent)
    cfg = settings(locked)
    # Threads this worker advances tell people on the configured channels: the outbox
    # records each notice; beside the worker loop the dispatcher catches up on what a
    # stopped process left out and sends what falls due (reminders, expiries, retries).
    from ..channels import Dispatcher, open_channels

    dispatcher = Dispatcher(open_channels(cfg.channels, agents=list(agents)))
    metrics = _worker_metrics() if metrics_port is not None else None
    runtime = open_runtime(
        cfg,
        agents,
        observers=[dispatcher, *([metrics] if metrics is not None else [])],
        with_model=any(a.model is None for a, _ in agents.values()),
    )
    dispatcher.bind(runtime)
    if metrics is not None and metrics_port is not None:
        _serve_metrics(metrics, runtime, metrics_host, metrics_port)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    heap = settle(cfg)  # ready: start-up's objects frozen (threadline.heap)

    async def go() -> dict[str, int]:
        w = Worker(
            runtime,
            concurrency=concurrency,
            lease_ttl=lease_ttl,
            poll_interval=poll,
            shutdown_timeout=shutdown_timeout,
            metrics=metrics,
        )
        w.install_signal_handlers()
        outbox = asyncio.create_task(
            dispatcher.serve(interval=poll, stopping=lambda: w.stopping), name="channel outbox"
        )
        err_console.print(
            f"threadline worker {w.owner}: agents {', '.join(sorted(runtime.agents))}"
            f", concurrency {concurrency}; {heap}; stop with Ctrl-C or SIGTERM",
            highlight=False,
            soft_wrap=True,
        )
        try:
            stats = await w.run()
        finally:
            w.stop()  # also when run() raised (a store it cannot use): the outbox loop ends
            outbox.cancel()
            await asyncio.wait({outbox}, timeout=5)
            await dispatcher.aclose()
            await runtime.store.close()
        return {**vars(stats), "notices_sent": dispatcher.sent, "notices_failed": dispatcher.failed}

    stats = run_async(go())
    console.print(json.dumps({"worker": "stopped", **stats}), highlight=False, soft_wrap=True)


def _worker_metrics() -> RuntimeMetrics:
    try:
        return RuntimeMetrics()
    except ImportError as exc:
        raise MissingExtraError("server", exc.name or "prometheus-client") from None


def _serve_metrics(metrics: RuntimeMetrics, runtime: Runtime, host: str, port: int) -> None:
    """prometheus_client's own small HTTP server, on a thread of its own."""
    from prometheus_client import start_http_server

    from ..models.resilience import breakers_of

    metrics.watch_breakers(
        lambda: breakers_of([runtime.model, *(a.model for a in runtime.agents.values())])
    )
    try:
        start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc}") from None
    err_console.print(f"metrics on http://{host}:{port}/metrics", highlight=False)


# -- db ------------------------------------------------------------------------------------


@command(db_app, "migrate")
def db_migrate(store_url: StoreOpt = None) -> None:
    """Apply pending schema migrations (PostgreSQL; SQLite migrates itself on open)."""

    async def go() -> str:
        store = _store(store_url)
        try:
            migrate = getattr(store, "migrate", None)
            if migrate is None:
                await store.ping()  # SQLite applies its migrations when it opens
                return f"{type(store).__name__}: migrations are applied automatically; up to date"
            applied = await migrate()
            return f"applied migrations {applied}" if applied else "already up to date"
        finally:
            await store.close()

    console.print(run_async(go()), highlight=False)


@command(db_app, "status")
def db_status(store_url: StoreOpt = None) -> None:
    """Show the applied and pending migrations. Exit code 1 if any are pending."""

    async def go() -> tuple[list[tuple[int, str, Any]], list[tuple[int, str]]]:
        store = _store(store_url)
        try:
            if not isinstance(store, SQLStore):
                return [], []
            rows = await store.migrations()
            have = {r[0] for r in rows}
            return rows, [(n, name) for n, name, _ in store.dialect.migrations if n not in have]
        finally:
            await store.close()

    applied, pending = run_async(go())
    table = Table("migration", "name", "applied")
    for number, name, at in applied:
        table.add_row(str(number), name, str(at))
    for number, name in pending:
        table.add_row(str(number), name, "[bold red]pending[/]")
    console.print(table)
    if pending:
        raise fail("migrations pending; run: threadline db migrate")


# -- threads: stuck, retry, prune ----------------------------------------------------------


@command(threads_app, "stuck")
def threads_stuck(
    grace: Annotated[str, typer.Option(help="How late counts as stuck (e.g. 60s, 5m).")] = "60s",
    store_url: StoreOpt = None,
) -> None:
    """Threads no worker is advancing: expired leases, unworked runnable threads, overdue waits."""

    async def go() -> list[tuple[ThreadSummary, str]]:
        store = _store(store_url)
        try:
            return await stuck_threads(store, grace=parse_age(grace))
        finally:
            await store.close()

    rows = run_async(go())
    if not rows:
        console.print("no stuck threads")
        return
    # One plain line per thread (tab-separated): easy to read, grep and pipe to `retry`.
    for s, why in rows:
        console.print(
            f"{s.id}\t{s.agent}\t{s.status.value}\t{why}",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )


@command(threads_app, "retry")
def threads_retry(
    thread_id: Annotated[str, typer.Argument(help="The thread to get moving again.")],
    store_url: StoreOpt = None,
) -> None:
    """Get a thread moving: break a stale lease (running), resume it (escalated, paused, or
    failed after its advance kept failing), or end its wait now (waiting). A worker then
    picks it up."""

    async def go() -> str:
        store = _store(store_url)
        runtime = Runtime(store)
        try:
            thread = await store.load(thread_id)
            status = thread.status
            if status == Status.RUNNING:
                await store.break_lease(thread_id)
                return "lease cleared; the next free worker takes it"
            if status in (Status.ESCALATED, Status.PAUSED, Status.FAILED):
                await runtime.resume(thread_id, by="operator")
                await store.break_lease(thread_id)
                return f"resumed ({status.value} -> running)"
            if status == Status.WAITING:
                await store.append(
                    thread_id,
                    [
                        WaitTimedOut(
                            seq=thread.next_seq, at=utcnow(), event=thread.state.waiting_for
                        )
                    ],
                    expected_seq=thread.next_seq,
                )
                await store.break_lease(thread_id)
                return "wait ended now (wait_timed_out); the next free worker takes it"
            raise InvalidAction(
                f"thread {thread_id} is {status.value}; retry applies to running, escalated, "
                "paused, failed or waiting threads (send a message to continue a finished one)"
            )
        finally:
            await store.close()

    console.print(run_async(go()), highlight=False)


@command(threads_app, "prune")
def threads_prune(
    older: Annotated[str, typer.Option(help="Delete threads untouched for longer (e.g. 30d).")],
    status: Annotated[
        list[str],
        typer.Option(help="Only threads with this status (repeatable), e.g. done."),
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count.")] = False,
    store_url: StoreOpt = None,
) -> None:
    """Retention: delete finished threads older than a cut-off (export them first to keep)."""
    age = parse_age(older)
    try:
        statuses = [Status(s) for s in status]
    except ValueError:
        raise ConfigError(f"status must be among: {', '.join(s.value for s in Status)}") from None
    live = {Status.RUNNING, Status.WAITING} & set(statuses)
    if live:
        raise ConfigError(
            f"refusing to prune {', '.join(s.value for s in live)} threads: "
            "workers may be advancing them"
        )

    async def go() -> int:
        store = _store(store_url)
        cutoff = utcnow() - age
        count = 0
        try:
            for st in statuses:
                doomed = [s.id async for s in summaries(store, st) if s.updated_at < cutoff]
                for thread_id in doomed:
                    if not dry_run:
                        try:
                            await store.delete(thread_id)
                        except ThreadNotFound:
                            continue
                    count += 1
            return count
        finally:
            await store.close()

    count = run_async(go())
    verb = "would delete" if dry_run else "deleted"
    console.print(f"{verb} {count} thread(s) older than {older}", highlight=False)


# -- threads: export and import ------------------------------------------------------------


@command(threads_app, "export")
def threads_export(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
    status: Annotated[str | None, typer.Option(help="Only threads with this status.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only threads of this agent.")] = None,
    store_url: StoreOpt = None,
) -> None:
    """Write threads as JSON lines (one `Thread.to_dict()` per line): backups, migrations.

    Every readable thread is written; one that cannot be read (a damaged row or event) is
    reported on stderr and the command exits 1 after writing all the others."""
    st = Status(status) if status else None
    bad: list[tuple[str, str]] = []

    async def go(out: Any) -> int:
        store = _store(store_url)
        count = 0
        cursor = None
        try:
            while True:
                page = await store.list(status=st, agent=agent, limit=500, cursor=cursor)
                bad.extend((b.id, b.reason) for b in page.skipped)
                for s in page.items:
                    try:
                        thread = await store.load(s.id)
                    except ThreadNotFound:  # deleted since it was listed
                        continue
                    except StoreError as exc:  # CorruptEvent and kin: report, go on
                        bad.append((s.id, str(exc)))
                        continue
                    out.write(json.dumps(thread.to_dict(), ensure_ascii=False) + "\n")
                    count += 1
                cursor = page.cursor
                if cursor is None:
                    return count
        finally:
            await store.close()

    if output is None:
        count = run_async(go(sys.stdout))
    else:
        with output.open("w", encoding="utf-8") as fh:
            count = run_async(go(fh))
    for thread_id, reason in bad:
        err_console.print(f"[red]not exported[/] {escape(thread_id)}: {escape(reason)}")
    err_console.print(f"exported {count} thread(s)", highlight=False)
    if bad:
        err_console.print(f"{len(bad)} thread(s) could not be read", highlight=False)
        raise typer.Exit(1)


def read_thread_lines(lines: Iterable[str], source: str) -> list[Thread]:
    """Parse JSON lines into threads, all or nothing: a bad line names its number."""
    threads = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            threads.append(Thread.from_dict(data))
        except CorruptEvent as exc:
            raise ConfigError(f"{source} line {number}: {exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{source} line {number}: not a thread: {exc}") from None
    return threads


@command(threads_app, "import")
def threads_import(
    source: Annotated[Path, typer.Argument(help="JSON lines written by `threads export`.")],
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Skip ids already in the store.")
    ] = False,
    store_url: StoreOpt = None,
) -> None:
    """Load exported threads into a store. Every line is checked before anything is written."""
    with source.open(encoding="utf-8") as fh:
        threads = read_thread_lines(fh, str(source))

    async def go() -> tuple[int, int]:
        store = _store(store_url)
        created = skipped = 0
        try:
            for thread in threads:
                try:
                    await store.get(thread.id)
                except ThreadNotFound:
                    pass
                else:
                    if skip_existing:
                        skipped += 1
                        continue
                    raise StoreError(
                        f"thread {thread.id} already exists in the store "
                        f"({created} imported before it); use --skip-existing"
                    )
                await store.create(thread)
                created += 1
            return created, skipped
        finally:
            await store.close()

    created, skipped = run_async(go())
    console.print(
        f"imported {created} thread(s)" + (f", skipped {skipped} existing" if skipped else ""),
        highlight=False,
    )
