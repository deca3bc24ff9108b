"""Many machines, for real: `threadline worker` processes on separate test hosts (network
namespaces with their own addresses on a virtual LAN) lease threads from PostgreSQL over
that network, through a forwarder on the LAN's gateway (PostgreSQL itself listens on
loopback only).

* A host's link is cut (`ip link set <port> down`) while its worker is inside a tool, for
  longer than the lease; another host takes the thread over and finishes it; the link comes
  back. The cut-off worker's late append is refused by fencing (LeaseLost), the tool run that
  would have followed never happens there, nothing is lost or doubled, and the worker goes
  on leasing and advancing threads by itself.
* PostgreSQL restarts (a private server of the test's, so no other user of the machine's
  server is disturbed) while the hosts' workers advance threads: every thread still
  finishes, nothing is lost or doubled, and every worker goes on working by itself.

Every wait is bounded by a multiple of the lease TTL, generous for a loaded machine; nothing
asserts on wall-clock durations.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "crash"))

from fleet import agent  # noqa: E402
from hosts_support import Forwarder, Lan, PrivatePostgres, require_netns, wait_until  # noqa: E402
from shop import SIDE_TABLE  # noqa: E402

from threadline import Runtime  # noqa: E402
from threadline.stores.postgres import PostgresStore  # noqa: E402
from threadline.tools import idempotency_key  # noqa: E402

HOSTS = 3
CONCURRENCY = 3
LEASE_TTL = 3.0
HOLD_SECONDS = 2 * LEASE_TTL
WAIT = 40 * LEASE_TTL
"""The bound of any one wait: a takeover needs about one TTL, a loaded machine far more."""
CUTS = 3
ORDERS = 24
RESTARTS = 2
FINISHED = ("done", "escalated")


def _query(url: str, schema: str, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]


def _query_retrying(url: str, schema: str, sql: str, args: Sequence[Any] = ()) -> Any:
    """The same, answering None while the server is restarting (for polls)."""
    try:
        return _query(url, schema, sql, args)
    except psycopg.OperationalError:
        return None


async def _launch(url: str, schema: str, texts: Sequence[str]) -> list[str]:
    store = PostgresStore(url, schema=schema, migrate=True)
    try:
        await store.ping()  # migrates a new schema
        runtime = Runtime(store, agents=[agent])
        return [(await runtime.launch(agent, text, advance=False)).id for text in texts]
    finally:
        await store.close()


def launch(url: str, schema: str, texts: Sequence[str]) -> list[str]:
    return asyncio.run(_launch(url, schema, texts))


def _via(url: str, host: str, port: int) -> str:
    """`url` with its host and port replaced (the address the test hosts use)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0] + "@" if len(netloc) == 2 else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}:{port}"))


class Fleet:
    """One `threadline worker` process per test host."""

    def __init__(self, lan: Lan, url: str, schema: str, logs: Path) -> None:
        self.lan = lan
        self.logs = logs
        sep = "&" if "?" in url else "?"
        self.env = {
            **os.environ,
            "THREADLINE_STORE": f"{url}{sep}schema={schema}&pool_max=8",
            "CRASH_DB_URL": url,
            "CRASH_SCHEMA": schema,
            "HOLD_SECONDS": str(HOLD_SECONDS),
        }
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> Fleet:
        for host in range(self.lan.count):
            argv = [
                sys.executable, "-m", "threadline", "worker",
                "--agent", f"{HERE / 'fleet.py'}:agent",
                "--concurrency", str(CONCURRENCY), "--lease-ttl", str(LEASE_TTL),
                "--poll", "0.5", "--shutdown-timeout", str(3 * LEASE_TTL),
            ]  # fmt: skip
            with open(self.log_path(host), "wb") as err:  # the child keeps its own copy
                self.procs.append(
                    self.lan.popen(
                        host, argv, env=self.env, cwd=self.logs, stdout=subprocess.PIPE, stderr=err
                    )
                )
        return self

    def log_path(self, host: int) -> Path:
        return self.logs / f"host-{host}.log"

    def log(self, host: int) -> str:
        return self.log_path(host).read_text(errors="replace")

    def host_of(self, pid: int) -> int:
        return [p.pid for p in self.procs].index(pid)

    def alive(self) -> None:
        for host, proc in enumerate(self.procs):
            if proc.poll() is not None:
                pytest.fail(
                    f"the worker on host {host} exited ({proc.returncode}): "
                    f"{self.log(host)[-2000:]}"
                )

    def stop(self) -> list[dict[str, Any]]:
        """SIGTERM every worker; their final stats (what each printed on stopping)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        stats = []
        for host, proc in enumerate(self.procs):
            try:
                out, _ = proc.communicate(timeout=WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("{")]
            if not lines:
                pytest.fail(f"the worker on host {host} printed no stats: {self.log(host)[-2000:]}")
            stats.append(json.loads(lines[-1]))
        return stats

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def lan() -> Iterator[Lan]:
    require_netns()
    with Lan(HOSTS) as made:
        yield made


def _prepare(url: str, schema: str) -> None:
    asyncio.run(_launch(url, schema, []))  # migrates
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute(SIDE_TABLE)


def _until_it_works(url: str, schema: str, pid: int, since: Any, what: str) -> list[str]:
    """Launch batches of orders until the worker `pid` ran a tool after `since` (the other
    hosts may take a whole batch first); the ids launched."""
    ids: list[str] = []

    def worked() -> bool:
        if _query_retrying(
            url, schema, "SELECT 1 FROM executions WHERE pid = %s AND at > %s", (pid, since)
        ):
            return True
        if _open(url, schema) < HOSTS * CONCURRENCY:
            n = len(ids)
            ids.extend(
                launch(
                    url, schema, [f"order {what} {n + i}" for i in range(2 * HOSTS * CONCURRENCY)]
                )
            )
        return False

    wait_until(worked, f"{what} to work again", WAIT, every=0.5)
    return ids


def _cut_inside_hold(
    url: str, schema: str, lan: Lan, fleet: Fleet, text: str, ids: list[str]
) -> tuple[str, int, int, str, int] | None:
    """Launch a hold thread and cut the host running it while it sleeps in `hold`: the
    thread, the worker's pid, its host, lease owner and token. None (the link restored)
    if the cut came too late, the hold result already written (a very loaded machine)."""
    # With orders around it, so the host is cut with other steps in flight too.
    batch = [f"order before {text} {i}" for i in range(HOSTS * CONCURRENCY)]
    launched = launch(url, schema, [*batch, text])
    ids += launched
    thread_id = launched[-1]
    # Inside `hold` on some host: it recorded itself and sleeps HOLD_SECONDS.
    (pid,) = wait_until(
        lambda: _query(
            url, schema, "SELECT pid FROM executions WHERE thread_id = %s AND tool = 'hold'",
            (thread_id,),
        ),
        f"a host to enter the hold tool of {text!r}", WAIT,
    )[0]  # fmt: skip
    host = fleet.host_of(pid)
    ((owner, token),) = _query(
        url, schema, "SELECT lease_owner, lease_token FROM threads WHERE id = %s", (thread_id,)
    )
    lan.cut(host)
    late = _query(
        url, schema,
        "SELECT 1 FROM events WHERE thread_id = %s AND kind IN ('tool_result', 'tool_error')",
        (thread_id,),
    )  # fmt: skip
    if owner is None or f":{pid}:" not in owner or late:
        lan.restore(host)
        return None
    return thread_id, pid, host, owner, token


def _per_host(stats: list[dict[str, Any]]) -> list[dict[str, int]]:
    return [{k: s[k] for k in ("leased", "advanced", "lost", "failed")} for s in stats]


def _open(url: str, schema: str) -> int:
    rows = _query_retrying(
        url, schema, "SELECT count(*) FROM threads WHERE status NOT IN ('done', 'escalated')"
    )
    return -1 if rows is None else int(rows[0][0])


def _check_ledger_and_log(url: str, schema: str, ids: Sequence[str]) -> dict[str, int]:
    """Nothing lost or doubled: every thread finished with dense events, one outcome per
    call, the non-idempotent charge at most once per thread, receipts re-run with one key."""
    rows = _query(url, schema, "SELECT id, status, next_seq FROM threads")
    status = {r[0]: r[1] for r in rows}
    assert set(ids) <= set(status)
    assert {status[t] for t in ids} <= set(FINISHED), {t: status[t] for t in ids}
    seqs = _query(
        url, schema, "SELECT thread_id, array_agg(seq ORDER BY seq) FROM events GROUP BY 1"
    )
    next_seq = {r[0]: r[2] for r in rows}
    for thread_id, got in seqs:
        assert got == list(range(next_seq[thread_id])), (thread_id, got)
    doubled = _query(
        url, schema,
        "SELECT thread_id, body->>'call_id', count(*) FROM events "
        "WHERE kind IN ('tool_result', 'tool_error') GROUP BY 1, 2 HAVING count(*) > 1",
    )  # fmt: skip
    assert doubled == []
    charges = _query(
        url, schema,
        "SELECT thread_id, count(*), count(DISTINCT call_id) FROM executions "
        "WHERE tool = 'charge' GROUP BY thread_id",
    )  # fmt: skip
    assert all(n == 1 for _, n, _ in charges), [c for c in charges if c[1] != 1]
    charged = {c[0] for c in charges}
    assert all(t in charged for t in ids if status[t] == "done")
    for thread_id, call_id, keys in _query(
        url, schema,
        "SELECT thread_id, call_id, array_agg(DISTINCT idempotency_key) FROM executions "
        "WHERE tool IN ('send_receipt', 'hold') GROUP BY 1, 2",
    ):  # fmt: skip
        assert keys == [idempotency_key(thread_id, call_id)]
    reasons = _query(
        url, schema,
        "SELECT e.body->>'reason' FROM events e JOIN threads t ON t.id = e.thread_id "
        "WHERE t.status = 'escalated' AND e.kind = 'escalated'",
    )  # fmt: skip
    assert all("may have run" in (r or "") for (r,) in reasons), reasons
    (releases,) = _query(url, schema, "SELECT count(*) FROM threads WHERE lease_token > 1")[0]
    return {
        "threads": len(ids),
        "done": sum(status[t] == "done" for t in ids),
        "escalated": sum(status[t] == "escalated" for t in ids),
        "leased_again": int(releases),
    }


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(900)
def test_a_host_cut_off_mid_step_is_fenced_and_recovers(
    lan: Lan, postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    url, schema = postgres_url, pg_schema
    _prepare(url, schema)
    target = urlsplit(url)
    forwarder = Forwarder(lan.gateway, 5432, target.hostname or "127.0.0.1", target.port or 5432)
    fleet = Fleet(lan, _via(url, lan.gateway, 5432), schema, tmp_path)
    ids: list[str] = []
    cuts: list[dict[str, Any]] = []
    attempts = 0
    try:
        forwarder.start()
        fleet.start()
        ids += launch(url, schema, [f"order {i}" for i in range(ORDERS)])
        for k in range(CUTS):
            for _attempt in range(3):
                attempts += 1
                inside = _cut_inside_hold(url, schema, lan, fleet, f"hold {k}", ids)
                if inside is not None:
                    break
            else:
                pytest.fail(f"cut {k}: three cuts in a row landed after the hold tool ended")
            thread_id, pid, host, owner, token = inside
            try:
                wait_until(
                    lambda tid=thread_id, o=owner, t=token: _query(
                        url, schema,
                        "SELECT 1 FROM threads WHERE id = %s AND lease_token > %s "
                        "AND lease_owner IS DISTINCT FROM %s", (tid, t, o),
                    ),
                    f"another host to take over the thread of cut {k}", WAIT,
                )  # fmt: skip
                wait_until(
                    lambda tid=thread_id: _query(
                        url,
                        schema,
                        "SELECT 1 FROM threads WHERE id = %s AND status IN ('done', 'escalated')",
                        (tid,),
                    ),
                    f"the taker to finish the thread of cut {k}",
                    WAIT,
                )
            finally:
                lan.restore(host)
            (restored,) = _query(url, schema, "SELECT now()")[0]
            # The cut-off worker's late append (the hold result) reaches the database: refused.
            wait_until(
                lambda h=host, tid=thread_id: f"lost the lease on {tid}" in fleet.log(h),
                f"host {host}'s late append to be refused (cut {k})", WAIT,
            )  # fmt: skip
            # ... and it goes on working by itself: it runs tools of new threads.
            ids += _until_it_works(url, schema, pid, restored, f"host {host} after cut {k}")
            ledger = _query(
                url, schema,
                "SELECT tool, pid FROM executions WHERE thread_id = %s ORDER BY id", (thread_id,),
            )  # fmt: skip
            cuts.append({"host": host, "pid": pid, "thread": thread_id, "ledger": ledger})
        wait_until(lambda: _open(url, schema) == 0, "every thread to finish", WAIT)
        fleet.alive()
        stats = fleet.stop()
    finally:
        fleet.kill()
        forwarder.stop()

    for cut in cuts:
        holds = [pid for tool, pid in cut["ledger"] if tool == "hold"]
        charges = [pid for tool, pid in cut["ledger"] if tool == "charge"]
        # hold ran on the cut-off host, then again (idempotent, same key) on the taker;
        # the cut-off host never ran the charge that would have followed its late append.
        assert holds[0] == cut["pid"] and len(holds) >= 2, cut
        assert cut["pid"] not in holds[1:] + charges and len(charges) <= 1, cut
    summary = _check_ledger_and_log(url, schema, ids)
    refused = sum(s["lost"] for s in stats)
    assert refused >= CUTS
    print(
        f"\nmany hosts, link cuts: {HOSTS} hosts x {CONCURRENCY} slots, lease TTL {LEASE_TTL}s, "
        f"{summary['threads']} threads ({summary['done']} done, {summary['escalated']} "
        f"escalated: charge may have run), {len(cuts)} cuts inside a step ({attempts} tried), "
        f"{len(cuts)} cut threads taken "
        f"over and finished by another host, {summary['leased_again']} threads leased again, "
        f"{refused} late appends refused (LeaseLost), forwarder connections "
        f"{forwarder.connections}; per host: {_per_host(stats)}"
    )


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(900)
def test_postgres_restarting_under_load_loses_nothing(lan: Lan, tmp_path: Path) -> None:
    with PrivatePostgres() as pg:
        url, schema = pg.url, "fleet"
        _prepare(url, schema)
        forwarder = Forwarder(lan.gateway, pg.port, "127.0.0.1", pg.port)
        fleet = Fleet(lan, _via(url, lan.gateway, pg.port), schema, tmp_path)
        ids: list[str] = []
        in_flight: list[int] = []  # threads not finished when each restart began
        try:
            forwarder.start()
            fleet.start()
            for r in range(RESTARTS):
                batch = launch(url, schema, [f"order {r}-{i}" for i in range(ORDERS)])
                ids += batch
                # Under load: some of the batch done, the rest in flight.
                wait_until(
                    lambda b=batch: _query_retrying(
                        url, schema,
                        "SELECT 1 FROM threads WHERE id = ANY(%s) AND status = 'done' "
                        "HAVING count(*) >= %s", (b, len(b) // 4),
                    ),
                    f"a quarter of batch {r} to finish", WAIT,
                )  # fmt: skip
                in_flight.append(_open(url, schema))
                pg.restart()
            (restarted,) = _query(url, schema, "SELECT now()")[0]
            for host, proc in enumerate(fleet.procs):
                ids += _until_it_works(
                    url, schema, proc.pid, restarted, f"host {host} after the restarts"
                )
            wait_until(lambda: _open(url, schema) == 0, "every thread to finish", WAIT)
            fleet.alive()
            stats = fleet.stop()
        finally:
            fleet.kill()
            forwarder.stop()
        summary = _check_ledger_and_log(url, schema, ids)
    # The restarts hit work in flight. Whether a worker's statement failed during one
    # depends on timing: on a loaded machine the hosts may sit in a tool or between steps
    # while the server is down, so failed steps are reported, not required.
    assert sum(in_flight) > 0, in_flight
    print(
        f"\nmany hosts, PostgreSQL restarts: {HOSTS} hosts x {CONCURRENCY} slots, lease TTL "
        f"{LEASE_TTL}s, {RESTARTS} restarts under load, {summary['threads']} threads "
        f"({summary['done']} done, {summary['escalated']} escalated: charge may have run), "
        f"{summary['leased_again']} threads leased again, {in_flight} in flight at the "
        f"restarts; per host: "
        f"{_per_host(stats)}"
    )


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_a_host_cut_off_inside_a_transaction_does_not_block_the_takeover(
    lan: Lan, postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    """A host cut off between two statements of a store transaction leaves its session idle
    in the transaction, holding the thread's row lock; the server hears nothing from it
    (for hours, with default TCP keepalives). Leasing skips locked rows, so no other host
    could take the thread over: the store's sessions end such a transaction themselves."""
    url, schema = postgres_url, pg_schema
    _prepare(url, schema)
    (thread_id,) = launch(url, schema, ["order stuck"])
    target = urlsplit(url)
    forwarder = Forwarder(lan.gateway, 5432, target.hostname or "127.0.0.1", target.port or 5432)
    out = tmp_path / "locker.out"
    host_url = _via(url, lan.gateway, 5432)
    locker = None
    try:
        forwarder.start()
        with open(out, "wb") as sink:  # the child keeps its own copy
            locker = lan.popen(
                0,
                [sys.executable, str(HERE / "locker.py"), host_url, schema, thread_id],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        wait_until(lambda: "locked" in out.read_text(), "the host to lock the thread's row", WAIT)
        lan.cut(0)
        try:

            async def take() -> Any:
                store = PostgresStore(url, schema=schema)
                try:
                    return await store.lease("the-taker", ttl=60, thread_ids=[thread_id])
                finally:
                    await store.close()

            leases = wait_until(lambda: asyncio.run(take()), "another host to lease it", WAIT, 1.0)
        finally:
            lan.restore(0)
    finally:
        if locker is not None:
            locker.kill()
            locker.wait()
        forwarder.stop()
    assert leases[0].thread_id == thread_id
    ((owner,),) = _query(url, schema, "SELECT lease_owner FROM threads WHERE id = %s", (thread_id,))
    assert owner == "the-taker"
