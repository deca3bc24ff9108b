"""The HTTP server's cost over calling the runtime in-process.

Same agents, same instant model (a function returning the next intent), same kind of store
(a fresh SQLite file each, WAL, synchronous=FULL), measured in the same run:

  * throughput: N threads of an agent that finishes at once (one model call, `done`).
    In-process: `runtime.launch()` under the same concurrency. HTTP: `POST /v1/threads`
    with `wait: true` against a real uvicorn server on loopback (API key auth on, one
    request per thread), so each answer is a *completed* thread; plus the accept rate of
    `POST /v1/threads` without wait (launches/s).
  * approval round trip: threads paused for an approval, answered one at a time. In-process:
    `approve()` then `advance()` until done. HTTP: the client opens the thread's SSE stream,
    POSTs the approval, and stops the clock when the `done` event arrives.

Run: python bench/server.py [--threads 300] [--concurrency 16] [--approvals 100] [--json f]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console
from rich.table import Table

from threadline import Agent, Runtime, SQLiteStore, tool
from threadline.models.base import Context
from threadline.server import ServerConfig, Services, create_app
from threadline.server.auth import create_key
from threadline.stores import key_store
from threadline.testing import FunctionModel, intent

console = Console()


@tool(approval="always")
def launch_rocket(target: str) -> str:
    """Launch (needs approval)."""
    return f"launched to {target}"


def instant_model() -> FunctionModel:
    def answer(context: Context) -> Any:
        text = context.messages[-1].content
        if "launched to" in text:
            return intent("done_for_now", message="done")
        if "gate" in text[:200]:
            return intent("launch_rocket", target="moon")
        return intent("done_for_now", message="done")

    return FunctionModel(answer, model_id="instant")


AGENTS = [
    Agent(name="quick", instructions="Finish."),
    Agent(name="gated", tools=[launch_rocket], instructions="Launch, then finish."),
]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# -- in-process baseline -----------------------------------------------------------------


async def inprocess(db: Path, threads: int, concurrency: int, approvals: int) -> dict[str, Any]:
    async with SQLiteStore(db) as store:
        runtime = Runtime(store, agents=AGENTS, model=instant_model())
        slots = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with slots:
                t = await runtime.launch("quick", "hello")
                assert t.status.value == "done", t.status

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(threads)))
        completed = threads / (time.perf_counter() - start)

        latencies = []
        for _ in range(approvals):
            t = await runtime.launch("gated", "gate: go")
            call_id = next(iter(t.state.pending))
            t0 = time.perf_counter()
            await runtime.approve(t.id, call_id, by="bench")
            t = await runtime.advance(t.id)
            latencies.append((time.perf_counter() - t0) * 1000)
            assert t.status.value == "done", t.status
    return {"completed_per_s": completed, "launch_per_s": completed, "approval_ms": latencies}


# -- over HTTP ---------------------------------------------------------------------------


def start_server(db: Path) -> tuple[uvicorn.Server, threading.Thread, str, str]:
    async def key() -> str:
        async with SQLiteStore(db) as store:
            return (await create_key(key_store(store), "bench", ["admin"]))[1]

    secret = asyncio.run(key())
    services = Services.build(
        ServerConfig(poll_interval=1.0, concurrency=64),
        lambda observers: Runtime(
            SQLiteStore(db), agents=AGENTS, model=instant_model(), observers=observers
        ),
    )
    app = create_app(services)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="error", lifespan="on", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}", secret


async def over_http(
    url: str, secret: str, threads: int, concurrency: int, approvals: int
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {secret}"}, timeout=60, limits=limits
    ) as http:
        slots = asyncio.Semaphore(concurrency)

        async def one(wait: bool) -> str:
            async with slots:
                r = await http.post(
                    "/v1/threads", json={"agent": "quick", "message": "hello", "wait": wait}
                )
                r.raise_for_status()
                if wait:
                    assert r.json()["status"] == "done", r.json()["status"]
                return str(r.json()["id"])

        start = time.perf_counter()
        await asyncio.gather(*(one(True) for _ in range(threads)))
        completed = threads / (time.perf_counter() - start)

        start = time.perf_counter()
        ids = await asyncio.gather(*(one(False) for _ in range(threads)))
        launched = threads / (time.perf_counter() - start)
        while await _any_running(http):  # noqa: ASYNC110 - polling a remote server
            await asyncio.sleep(0.05)
        assert len(set(ids)) == threads

        latencies = []
        for _ in range(approvals):
            r = await http.post(
                "/v1/threads", json={"agent": "gated", "message": "gate: go", "wait": True}
            )
            view = r.json()
            call_id = view["pending_approvals"][0]["call_id"]
            async with http.stream(
                "GET",
                f"/v1/threads/{view['id']}/events/stream",
                params={"after": view["next_seq"] - 1},
            ) as stream:
                lines = stream.aiter_lines()
                assert await anext(lines) == ": connected"
                t0 = time.perf_counter()
                r = await http.post(
                    f"/v1/threads/{view['id']}/approvals/{call_id}", json={"approved": True}
                )
                r.raise_for_status()
                async for line in lines:
                    if line == "event: done":
                        break
                latencies.append((time.perf_counter() - t0) * 1000)
    return {"completed_per_s": completed, "launch_per_s": launched, "approval_ms": latencies}


async def _any_running(http: httpx.AsyncClient) -> bool:
    r = await http.get("/v1/threads", params={"status": "running", "limit": 1})
    return bool(r.json()["items"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--approvals", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base = asyncio.run(
            inprocess(Path(tmp) / "inprocess.db", args.threads, args.concurrency, args.approvals)
        )
        server, thread, url, secret = start_server(Path(tmp) / "server.db")
        try:
            http = asyncio.run(
                over_http(url, secret, args.threads, args.concurrency, args.approvals)
            )
        finally:
            server.should_exit = True
            thread.join(timeout=30)

    rows = [
        ("completed threads/s", base["completed_per_s"], http["completed_per_s"], True),
        ("launches accepted/s", base["launch_per_s"], http["launch_per_s"], True),
        (
            "approval round trip p50 (ms)",
            statistics.median(base["approval_ms"]),
            statistics.median(http["approval_ms"]),
            False,
        ),
        (
            "approval round trip p99 (ms)",
            percentile(base["approval_ms"], 99),
            percentile(http["approval_ms"], 99),
            False,
        ),
    ]
    table = Table(
        title=f"HTTP server vs in-process runtime ({args.threads} threads, "
        f"concurrency {args.concurrency}, {args.approvals} approvals, SQLite)"
    )
    table.add_column("metric")
    table.add_column("in-process", justify="right")
    table.add_column("HTTP", justify="right")
    table.add_column("HTTP / in-process", justify="right")
    for name, b, h, _higher_better in rows:
        table.add_row(name, f"{b:,.1f}", f"{h:,.1f}", f"{h / b:.2f}x")
    console.print(table)
    console.print(
        "In-process 'launches accepted/s' equals completed/s: launch() returns the "
        "finished thread. Ratios <1 for rates and >1 for latencies are the cost of "
        "HTTP, auth, JSON and the background runner."
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": [
                        {"metric": n, "in_process": b, "http": h, "ratio": h / b}
                        for n, b, h, _ in rows
                    ],
                    "args": vars(args) | {"json": str(args.json)},
                },
                indent=2,
            )
        )
    sys.exit(0)


if __name__ == "__main__":
    main()
