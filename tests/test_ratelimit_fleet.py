"""Worker processes sharing one provider limit and one tool limit through the store.

Real `threadline worker` processes (3 on PostgreSQL, 2 on SQLite) serve `ratelimit_agent`,
configured only by `THREADLINE_RATE_LIMITS`, and advance more threads than the limits let
through at once. The agent's model and tool record when each call reached them; in every
window of the limit's interval they saw no more calls than the limit allows, the limits
did bind (threads waited, and some window is full), and every thread ended `done` with
exactly its two model calls and one tool run: nothing lost, nothing run twice. On SQLite
one worker is SIGKILLed while threads wait and a fresh one takes its place.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pg_support import pg_store_url
from threadline import Runtime, Status
from threadline.events import ModelCall, ToolResult, Waiting
from threadline.stores import open_store

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ratelimit_agent import agent, busiest  # noqa: E402

MODEL_LIMIT, TOOL_LIMIT, PER = 5, 4, 2.0
LIMITS = f"model:recorder={MODEL_LIMIT}/{PER:g}s, tool:lookup={TOOL_LIMIT}/{PER:g}s"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_busiest_counts_calls_in_a_sliding_window() -> None:
    assert busiest([0.0, 1.0, 1.9, 2.0, 2.1], 2.0) == 4  # (0.1, 2.1]: 1.0, 1.9, 2.0, 2.1
    assert busiest([0.0, 2.0, 4.0], 2.0) == 1
    assert busiest([], 2.0) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as reply:
        return str(reply.read().decode())


class Fleet:
    """Worker processes on one store, each logging to its own file."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.env, self.tmp = env, tmp
        self.procs: list[tuple[subprocess.Popen[str], Path]] = []

    def start(self, *extra: str) -> subprocess.Popen[str]:
        log = self.tmp / f"worker-{len(self.procs)}.log"
        command = [sys.executable, "-m", "threadline", "worker"]
        command += ["--agent", f"{HERE / 'ratelimit_agent.py'}:agent", "--poll", "0.3"]
        command += ["--lease-ttl", "3", *extra]
        proc = subprocess.Popen(
            command,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),  # noqa: SIM115 - owned by the child
            text=True,
        )
        self.procs.append((proc, log))
        deadline = time.monotonic() + 90
        while "threadline worker" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "a worker did not start"
            time.sleep(0.1)
        return proc

    def stop(self) -> list[int | None]:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.procs:
            proc.communicate(timeout=60)
        return [proc.returncode for proc, _ in self.procs]

    def logs(self) -> str:
        return "\n".join(log.read_text()[-3000:] for _, log in self.procs)


async def _run_fleet(
    url: str, tmp: Path, workers: int, threads: int, *, kill_one: bool
) -> tuple[list[tuple[float, str, int]], list[Waiting], str | None]:
    calls_log = tmp / "calls.log"
    env = {
        **os.environ,
        "THREADLINE_STORE": url,
        "THREADLINE_LOG": "off",
        "THREADLINE_RATE_LIMITS": LIMITS,
        "RATE_TEST_LOG": str(calls_log),
    }
    store = open_store(url)
    runtime = Runtime(store, agents=[agent])
    await store.ping()  # migrates the database before the workers open it
    fleet = Fleet(env, tmp)
    metrics_port = _free_port()
    scraped: str | None = None
    try:
        fleet.start("--metrics-port", str(metrics_port))
        for _ in range(workers - 1):
            fleet.start()
        ids = [
            (await runtime.launch(agent, f"order {n}", advance=False)).id for n in range(threads)
        ]
        killed = False
        deadline = time.monotonic() + 400
        while True:
            statuses = [(await store.get(i)).status for i in ids]
            if all(s in (Status.DONE, Status.ESCALATED, Status.FAILED) for s in statuses):
                break
            assert time.monotonic() < deadline, (statuses, fleet.logs())
            waiting = sum(s is Status.WAITING for s in statuses)
            if kill_one and not killed and waiting >= 3:
                fleet.procs[-1][0].send_signal(signal.SIGKILL)  # mid-run, threads waiting
                killed = True
                fleet.start()
            await asyncio.sleep(0.3)
        assert killed or not kill_one, "no moment with threads waiting: the limit never bound"
        scraped = await asyncio.to_thread(_scrape, metrics_port)
    finally:
        codes = fleet.stop()
    assert codes[-1] == 0 and all(c in (0, -signal.SIGKILL) for c in codes), fleet.logs()
    waits: list[Waiting] = []
    for thread_id in ids:
        thread = await store.load(thread_id)
        assert thread.status is Status.DONE, (thread_id, thread.status, fleet.logs())
        assert sum(isinstance(e, ModelCall) for e in thread.events) == 2
        assert sum(isinstance(e, ToolResult) for e in thread.events) == 1
        waits += [e for e in thread.events if isinstance(e, Waiting)]
    await store.close()
    calls = []
    for line in calls_log.read_text().splitlines():
        at, what, pid = line.split()
        calls.append((float(at), what, int(pid)))
    return calls, waits, scraped


def _check_limits(
    calls: list[tuple[float, str, int]], waits: list[Waiting], threads: int
) -> tuple[int, int]:
    model = [at for at, what, _ in calls if what == "model"]
    tool = [at for at, what, _ in calls if what == "tool"]
    # A killed worker may have called the model for a step it never recorded: that call
    # was made again, so the model may see a few more calls than the threads record.
    assert len(model) >= 2 * threads and len(tool) >= threads
    assert busiest(model, PER) <= MODEL_LIMIT, sorted(model)
    assert busiest(tool, PER) <= TOOL_LIMIT, sorted(tool)
    assert busiest(model, PER) == MODEL_LIMIT, "the model limit never bound"
    assert {w.rate_limit for w in waits} >= {"model:recorder"}
    assert all(w.until is not None and w.until > w.at for w in waits)
    return busiest(model, PER), busiest(tool, PER)


@pytest.mark.postgres
async def test_three_workers_on_postgres_stay_under_a_shared_provider_limit(
    postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    threads = 30
    url = pg_store_url(postgres_url, pg_schema)
    calls, waits, scraped = await _run_fleet(url, tmp_path, 3, threads, kill_one=False)
    seen = _check_limits(calls, waits, threads)
    pids = {pid for _, what, pid in calls if what == "model"}
    assert len(pids) == 3, "not every worker called the model"
    assert scraped is not None
    samples = [
        line.rsplit(" ", 1)
        for line in scraped.splitlines()
        if line.startswith("threadline_rate_limit_waits_total{")
    ]
    assert sum(float(value) for _, value in samples) > 0, scraped  # worker 0's own waits
    span = max(c[0] for c in calls) - min(c[0] for c in calls)
    print(
        f"\n{threads} threads, 3 workers on PostgreSQL: {len(calls)} calls in {span:.1f}s, "
        f"busiest {PER:g}s window {seen[0]} model / {seen[1]} tool calls "
        f"(limits {MODEL_LIMIT}/{TOOL_LIMIT}), {len(waits)} rate-limit waits"
    )
    per_limit = {w.rate_limit: 0 for w in waits}
    for w in waits:
        per_limit[w.rate_limit] += 1
    print(json.dumps(per_limit))


async def test_two_workers_on_sqlite_stay_under_it_with_one_killed_midway(
    tmp_path: Path,
) -> None:
    threads = 20
    url = f"sqlite:///{tmp_path / 'threads.db'}"
    calls, waits, _ = await _run_fleet(url, tmp_path, 2, threads, kill_one=True)
    seen = _check_limits(calls, waits, threads)
    print(
        f"\n{threads} threads, 2 workers on SQLite (one SIGKILLed and replaced): busiest "
        f"{PER:g}s window {seen[0]} model / {seen[1]} tool calls, {len(waits)} waits"
    )
