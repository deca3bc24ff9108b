"""Operations commands: worker (graceful SIGTERM), db migrate/status, threads
stuck/retry/prune/export/import."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli_support import assert_frozen_unless_told_not_to, stop_cleanly
from pg_support import pg_store_url
from threadline import Runtime
from threadline.cli import _register, app
from threadline.cli.ops import parse_age
from threadline.errors import ConfigError
from threadline.events import (
    Done,
    Escalated,
    Status,
    Thread,
    ToolResult,
    UserMessage,
    Waiting,
    utcnow,
)
from threadline.stores import SQLiteStore, new_thread_id, open_store
from threadline.stores.migrations import POSTGRES_MIGRATIONS

_register()
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def run(coro):  # type: ignore[no-untyped-def]
    """The CLI runs its own event loop, so these tests are sync and run store calls here."""
    return asyncio.run(coro)


def make(status: str = "running", agent: str = "a") -> Thread:
    t = Thread(new_thread_id(), agent, metadata={"channel": "cli"})
    t.append(UserMessage(seq=0, at=utcnow(), text="hello"))
    t.append(ToolResult(seq=1, at=utcnow(), call_id="c1", tool="t", result={"x": [1, "ü"]}))
    if status == "done":
        t.append(Done(seq=2, at=utcnow(), message="ok"))
    elif status == "escalated":
        t.append(Escalated(seq=2, at=utcnow(), reason="help"))
    elif status == "waiting":
        t.append(Waiting(seq=2, at=utcnow(), until=utcnow() - timedelta(hours=2)))
    return t


def fill(url: str, *threads: Thread) -> None:
    async def go() -> None:
        store = open_store(url)
        for t in threads:
            await store.create(t)
        await store.close()

    run(go())


def call(url: str, method: str, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
    """One store call on a fresh store (closed afterwards)."""

    async def go():  # type: ignore[no-untyped-def]
        store = open_store(url)
        try:
            return await getattr(store, method)(*args, **kwargs)
        finally:
            await store.close()

    return run(go())


def test_parse_age() -> None:
    assert parse_age("30d") == timedelta(days=30)
    assert parse_age("1d12h") == timedelta(days=1, hours=12)
    assert parse_age("90s") == timedelta(seconds=90)
    for bad in ("30", "d", "30 days", "-1d", "1x"):
        with pytest.raises(ConfigError):
            parse_age(bad)


def test_export_from_sqlite_import_into_postgres(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    src_url = f"sqlite:///{tmp_path / 'src.db'}"
    dst_url = pg_store_url(postgres_url, pg_schema)
    threads = [make("done"), make("running"), make("escalated", agent="b")]
    fill(src_url, *threads)
    dump = tmp_path / "threads.jsonl"
    code, out = cli("threads", "export", "--store", src_url, "-o", str(dump))
    assert code == 0, out
    assert len(dump.read_text().splitlines()) == 3
    code, out = cli("threads", "import", str(dump), "--store", dst_url)
    assert code == 0 and "imported 3" in out, out
    for t in threads:
        loaded = call(dst_url, "load", t.id)
        assert loaded.to_dict() == t.to_dict()
        assert call(dst_url, "get", t.id).status == t.status
    # Importing again refuses duplicates unless told to skip them.
    code, out = cli("threads", "import", str(dump), "--store", dst_url)
    assert code == 1 and "already exists" in out
    code, out = cli("threads", "import", str(dump), "--store", dst_url, "--skip-existing")
    assert code == 0 and "skipped 3" in out
    # Only some: by status.
    code, out = cli("threads", "export", "--store", src_url, "--status", "done")
    assert code == 0 and len([ln for ln in out.splitlines() if ln.startswith("{")]) == 1


def test_import_with_a_bad_line_writes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    good = json.dumps(make("done").to_dict())
    bad_event = make("done").to_dict()
    bad_event["events"][1]["kind"] = "no_such_kind"
    dump = tmp_path / "bad.jsonl"
    dump.write_text(f"{good}\n{{not json\n")
    code, out = cli("threads", "import", str(dump), "--store", url)
    assert code == 1 and "line 2" in out
    dump.write_text(f"{good}\n\n{json.dumps(bad_event)}\n")
    code, out = cli("threads", "import", str(dump), "--store", url)
    assert code == 1 and "line 3" in out
    assert call(url, "list").items == []


def test_prune_deletes_only_old_threads_of_the_status(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    old_done, new_done, old_running = make("done"), make("done"), make("running")
    fill(url, old_done, new_done, old_running)
    conn = sqlite3.connect(tmp_path / "t.db")
    conn.execute(
        "UPDATE threads SET updated_at = '2000-01-01T00:00:00+00:00' WHERE id IN (?,?)",
        (old_done.id, old_running.id),
    )
    conn.commit()
    conn.close()
    code, out = cli(
        "threads", "prune", "--older", "30d", "--status", "done", "--dry-run", "--store", url
    )
    assert code == 0 and "would delete 1" in out
    code, out = cli("threads", "prune", "--older", "30d", "--status", "running", "--store", url)
    assert code == 1 and "refusing" in out
    code, out = cli("threads", "prune", "--older", "30d", "--status", "done", "--store", url)
    assert code == 0 and "deleted 1" in out
    assert {s.id for s in call(url, "list").items} == {new_done.id, old_running.id}


def test_stuck_and_retry(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    leased, waiting, escalated, done = make(), make("waiting"), make("escalated"), make("done")
    fill(url, leased, waiting, escalated, done)
    (lease,) = call(url, "lease", "dead-worker", ttl=0.01, agents=["a"], limit=1)
    assert lease.thread_id in (leased.id, waiting.id)
    if lease.thread_id == waiting.id:  # the overdue wait came first: take the other too
        (lease,) = call(url, "lease", "dead-worker", ttl=0.01, agents=["a"], limit=1)
    run(asyncio.sleep(0.05))

    code, out = cli("threads", "stuck", "--grace", "0s", "--store", url)
    assert code == 0, out
    assert leased.id in out and "dead-worker" in out and waiting.id in out
    assert escalated.id not in out and done.id not in out

    code, out = cli("threads", "retry", leased.id, "--store", url)
    assert code == 0 and "lease cleared" in out
    code, out = cli("threads", "retry", escalated.id, "--store", url)
    assert code == 0 and "resumed" in out
    code, out = cli("threads", "retry", waiting.id, "--store", url)
    assert code == 0 and "wait ended" in out
    code, out = cli("threads", "retry", done.id, "--store", url)
    assert code == 1 and "is done" in out
    code, out = cli("threads", "retry", "th_nope", "--store", url)
    assert code == 1 and "no thread" in out

    assert call(url, "get", leased.id).lease_owner is None
    assert call(url, "get", escalated.id).status == Status.RUNNING
    woke = call(url, "load", waiting.id)
    assert woke.status == Status.RUNNING and woke.events[-1].kind == "wait_timed_out"


def test_db_migrate_and_status_on_postgres(postgres_url: str, pg_schema: str) -> None:
    url = pg_store_url(postgres_url, pg_schema, migrate=False)
    code, out = cli("db", "migrate", "--store", url)

    every = [m[0] for m in POSTGRES_MIGRATIONS]
    assert code == 0 and f"applied migrations {every}" in out, out
    code, out = cli("db", "migrate", "--store", url)
    assert code == 0 and "already up to date" in out
    code, out = cli("db", "status", "--store", url)
    assert code == 0 and "threads and events" in out and "pending" not in out
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            f'DELETE FROM "{pg_schema}".threadline_migrations WHERE version = %s', (every[-1],)
        )
    code, out = cli("db", "status", "--store", url)
    assert code == 1 and "pending" in out and "threadline db migrate" in out
    code, out = cli("threads", "stuck", "--store", url)  # any command refuses the old schema
    assert code == 1 and "run: threadline db migrate" in out


def test_db_commands_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    code, out = cli("db", "migrate", "--store", url)
    assert code == 0 and "automatically" in out
    code, out = cli("db", "status", "--store", url)
    assert code == 0 and "threads and events" in out


@pytest.mark.slow
async def test_worker_command_finishes_the_current_step_on_sigterm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    from ops_agent import agent

    store = SQLiteStore(tmp_path / "w.db")
    thread = await Runtime(store, agents=[agent]).launch(agent, "go", advance=False)
    env = {**os.environ, "THREADLINE_STORE": url, "THREADLINE_LOG": "off"}
    proc = subprocess.Popen(  # noqa: ASYNC220 - a real worker process, signalled below
        [
            sys.executable,
            "-m",
            "threadline",
            "worker",
            "--agent",
            str(HERE / "ops_agent.py") + ":agent",
            "--poll",
            "0.1",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for _ in range(600):  # until the slow tool is running
        if (await store.load(thread.id)).events[-1].kind == "tool_started":
            break
        await asyncio.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the worker never started the tool")
    out, _ = stop_cleanly(proc)
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["worker"] == "stopped" and stats["released"] == 1
    final = await store.load(thread.id)
    # The step in flight finished and was checkpointed; no new step started; lease released.
    assert final.events[-1].kind == "tool_result" and final.status == Status.RUNNING
    assert (await store.get(thread.id)).lease_owner is None
    await store.close()


def test_worker_refuses_to_start_on_an_old_schema(postgres_url: str, pg_schema: str) -> None:
    url = pg_store_url(postgres_url, pg_schema, migrate=False)
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{pg_schema}"')
    code, out = cli_env(
        # In this process: the heap of the test run stays as it is (threadline.heap).
        {"THREADLINE_STORE": url, "THREADLINE_LOG": "off", "THREADLINE_GC_FREEZE": "0"},
        "worker",
        "--agent",
        str(HERE / "ops_agent.py") + ":agent",
    )
    assert code == 1
    assert "schema is at migration 0" in out and "run: threadline db migrate" in out


def cli_env(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.mark.slow
def test_api_only_server_and_separate_worker_processes(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    """`serve --no-worker` only records the launch; a `threadline worker` process runs it."""
    import socket

    import httpx

    url = pg_store_url(postgres_url, pg_schema, migrate=False)
    assert cli("db", "migrate", "--store", url)[0] == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "THREADLINE_STORE": url, "THREADLINE_LOG": "off"}
    agent_ref = str(HERE / "ops_agent.py") + ":agent"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "threadline",
            "serve",
            "--no-worker",
            "--no-auth",
            "--port",
            str(port),
            "--agent",
            agent_ref,
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "serve.log", "wb"),  # noqa: SIM115 - owned by the child
    )
    worker = None
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail(f"server did not start: {(tmp_path / 'serve.log').read_text()[-2000:]}")
        launched = httpx.post(
            f"{base}/v1/threads", json={"agent": "sleepy", "message": "go"}, timeout=10
        )
        assert launched.status_code == 201, launched.text
        thread_id = launched.json()["id"]
        time.sleep(1.0)
        still = httpx.get(f"{base}/v1/threads/{thread_id}", timeout=10).json()
        assert still["status"] == "running" and still["next_seq"] == 1  # nobody advanced it
        worker = subprocess.Popen(
            [sys.executable, "-m", "threadline", "worker", "--agent", agent_ref, "--poll", "0.2"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(300):
            got = httpx.get(f"{base}/v1/threads/{thread_id}", timeout=10).json()
            if got["status"] == "done":
                break
            time.sleep(0.1)
        assert got["status"] == "done", got
    finally:
        for proc in (worker, server):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (worker, server):
            if proc is not None:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    assert worker is not None and worker.returncode == 0


def test_serve_on_an_old_postgres_schema_refuses_in_one_line(
    postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    """Even with --no-auth (no key lookup), serve checks the store before uvicorn starts."""
    env = {
        **os.environ,
        "THREADLINE_STORE": pg_store_url(postgres_url, pg_schema, migrate=False),
        "THREADLINE_LOG": "off",
    }
    out = subprocess.run(
        [sys.executable, "-m", "threadline", "serve", "--no-auth", "--port", "1"],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "run: threadline db migrate" in lines[0]


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_export_writes_every_readable_thread_and_reports_the_bad_ones(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'src.db'}"
    else:
        url = pg_store_url(
            request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_schema")
        )
    threads = [make("done") for _ in range(6)]
    fill(url, *threads)
    corrupt, holed, bad_row = threads[1].id, threads[3].id, threads[4].id
    statements = [
        f"DELETE FROM events WHERE thread_id = '{holed}' AND seq = 1",
        f"UPDATE threads SET status = 'zombie' WHERE id = '{bad_row}'",
    ]
    if kind == "sqlite":
        statements.append(f"UPDATE events SET body = '{{oops' WHERE thread_id = '{corrupt}'")
        with sqlite3.connect(tmp_path / "src.db") as conn:
            for sql in statements:
                conn.execute(sql)
    else:
        statements.append(
            'UPDATE events SET body = \'{"kind": "nope"}\'::jsonb '
            f"WHERE thread_id = '{corrupt}'"
        )
        import psycopg

        with psycopg.connect(request.getfixturevalue("postgres_url")) as conn:
            conn.execute(f"SET search_path TO {request.getfixturevalue('pg_schema')}")
            for sql in statements:
                conn.execute(sql)
    dump = tmp_path / "threads.jsonl"
    code, out = cli("threads", "export", "--store", url, "-o", str(dump))
    assert code == 1, out
    exported = [json.loads(line)["id"] for line in dump.read_text().splitlines()]
    assert sorted(exported) == sorted(
        t.id for t in threads if t.id not in (corrupt, holed, bad_row)
    )
    assert "exported 3 thread(s)" in out and "3 thread(s) could not be read" in out
    for thread_id in (corrupt, holed, bad_row):
        assert f"not exported {thread_id}" in out


def _worker_ready_line(tmp_path: Path, **env: str) -> str:
    """Start `threadline worker` on an empty store, read the line it says it is ready
    with, stop it with SIGTERM; that line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "threadline", "worker", "--agent", f"{HERE / 'ops_agent.py'}:agent"],
        env={
            **os.environ,
            "THREADLINE_STORE": f"sqlite:///{tmp_path / 'w.db'}",
            "THREADLINE_LOG": "off",
            **env,
        },
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("threadline worker"):
            break
    else:
        proc.kill()
        pytest.fail(f"the worker exited without saying it was ready: {proc.wait()}")
    stop_cleanly(proc)
    return line


def test_worker_freezes_its_start_up_objects_unless_told_not_to(tmp_path: Path) -> None:
    """Ready, the worker freezes what start-up made (threadline.settle_heap), so a full
    collection no longer walks it; THREADLINE_GC_FREEZE=0 turns that off."""
    line = _worker_ready_line(tmp_path)
    off = _worker_ready_line(tmp_path, THREADLINE_GC_FREEZE="0")
    # imports, agents and runtime: tens of thousands of objects
    assert_frozen_unless_told_not_to(line, off, at_least=10_000)
