"""`threadline mcp` driven by the MCP SDK's own client: over stdio (the client starts the
process) and over streamable HTTP on loopback with the server's API keys and scopes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

import httpx2  # noqa: E402
from mcp import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from threadline import Runtime  # noqa: E402
from threadline.events import Status  # noqa: E402
from threadline.integrations.mcp.server import build_server  # noqa: E402
from threadline.server.auth import create_key  # noqa: E402
from threadline.stores import MemoryStore, SQLiteStore, key_store  # noqa: E402
from threadline.testing import ScriptedModel  # noqa: E402

HERE = Path(__file__).resolve().parent
REF = f"{HERE / 'deploy_agent.py'}:agent"
SPENDER = f"{HERE / 'spend_agent.py'}:agent"
TOOLS = {
    "list_agents",
    "launch_thread",
    "get_thread",
    "list_pending",
    "approve",
    "reject",
    "respond",
    "raise_budget",
}


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "THREADLINE_STORE": f"sqlite:///{tmp_path / 'threads.db'}",
        "THREADLINE_LOG": "off",
    }


async def _call(session: ClientSession, name: str, **arguments: Any) -> dict[str, Any]:
    result = await session.call_tool(name, arguments)
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def _error(session: ClientSession, name: str, **arguments: Any) -> str:
    result = await session.call_tool(name, arguments)
    assert result.is_error
    return " ".join(getattr(b, "text", "") for b in result.content)


async def _launch_approve_done(session: ClientSession, who: str) -> str:
    launched = await _call(session, "launch_thread", agent="deployer", message="deploy v1.2")
    assert launched["status"] == "awaiting_approval"
    thread_id = launched["thread_id"]
    pending = (await _call(session, "list_pending"))["pending"]
    mine = [p for p in pending if p["thread_id"] == thread_id]
    assert len(mine) == 1
    assert mine[0]["kind"] == "approval" and mine[0]["tool"] == "deploy"
    assert mine[0]["arguments"] == {"tag": "v1.2"}

    done = await _call(session, "approve", thread_id=thread_id, call_id=mine[0]["call_id"])
    assert done["status"] == "done"
    assert done["outcome"]["message"] == "the deploy is out"
    assert not (await _call(session, "list_pending"))["pending"]

    thread = await _call(session, "get_thread", thread_id=thread_id, events=100)
    approval = next(e for e in thread["events"] if e["kind"] == "approval")
    assert approval["approved"] and approval["by"] == who and approval["channel"] == "mcp"
    result = next(e for e in thread["events"] if e["kind"] == "tool_result")
    assert result["result"] == "deployed v1.2"
    return str(thread_id)


def _stdio(tmp_path: Path, ref: str) -> StdioServerParameters:
    """`threadline mcp --agent ref` over stdio, its store in `tmp_path`."""
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "threadline", "mcp", "--agent", ref],
        env=_env(tmp_path),
        cwd=str(tmp_path),
    )


async def test_stdio_launch_list_approve_reaches_done(tmp_path: Path) -> None:
    params = _stdio(tmp_path, REF)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        listed = await session.list_tools()
        assert {t.name for t in listed.tools} >= TOOLS
        agents = await _call(session, "list_agents")
        assert agents["agents"] == [
            {"name": "deployer", "tools": ["deploy", "request_more_information", "done_for_now"]}
        ]
        thread_id = await _launch_approve_done(session, "local")

        # a rejected call: the agent is told and finishes without deploying
        second = await _call(session, "launch_thread", agent="deployer", message="deploy v2")
        call_id = second["waiting"][0]["call_id"]
        rejected = await _call(
            session, "reject", thread_id=second["thread_id"], call_id=call_id, comment="freeze"
        )
        assert rejected["status"] == "done"
        assert rejected["outcome"]["message"] == "not deployed"
        # a question: listed as pending, answered with respond, then the approval
        asked = await _call(session, "launch_thread", agent="deployer", message="deploy, please")
        assert asked["status"] == "awaiting_human"
        question = (await _call(session, "list_pending"))["pending"][0]
        assert question["kind"] == "question"
        assert question["question"] == "Which tag should I deploy?"
        answered = await _call(
            session,
            "respond",
            thread_id=asked["thread_id"],
            request_id=question["request_id"],
            text="v3.1",
        )
        assert answered["status"] == "awaiting_approval"
        assert answered["waiting"][0]["arguments"] == {"tag": "v3.1"}
        # acting on something that is not waiting is a clear error, nothing written
        message = await _error(session, "approve", thread_id=thread_id, call_id="c2")
        assert "not awaiting approval" in message
        assert "no thread" in await _error(session, "get_thread", thread_id="th_nope")

    async with SQLiteStore(tmp_path / "threads.db") as store:
        assert (await store.load(thread_id)).status == Status.DONE


async def test_a_budget_run_out_is_listed_and_raised_over_stdio(tmp_path: Path) -> None:
    """A thread its own budget stopped is listed as pending (kind `budget`, with its
    figures); `raise_budget` raises it and runs the thread on to the new limit. A bad or
    lower limit is a clear error, nothing written."""
    params = _stdio(tmp_path, SPENDER)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        launched = await _call(session, "launch_thread", agent="spender", message="look it up")
        assert launched["status"] == "escalated"
        tid = launched["thread_id"]
        [waiting] = launched["waiting"]
        assert waiting["kind"] == "budget" and "budget" in waiting["reason"]
        assert waiting["figures"]["model_calls"] == {
            "used": 2,
            "reserved": 0,
            "next": 1,
            "limit": 2,
        }
        pending = (await _call(session, "list_pending"))["pending"]
        assert [(p["thread_id"], p["kind"]) for p in pending] == [(tid, "budget")]
        before = (await _call(session, "get_thread", thread_id=tid, events=1000))["events"]
        for bad, says in [
            ({"max_model_calls": -1}, "not a budget"),
            ({"max_model_calls": 1}, "is below that"),
            ({}, "at least one new limit"),
        ]:
            assert says in await _error(session, "raise_budget", thread_id=tid, **bad)
        after = (await _call(session, "get_thread", thread_id=tid, events=1000))["events"]
        assert after == before
        raised = await _call(session, "raise_budget", thread_id=tid, max_model_calls=4)
        assert raised["status"] == "escalated"
        assert raised["waiting"][0]["figures"]["model_calls"]["used"] == 4
        assert raised["waiting"][0]["figures"]["model_calls"]["limit"] == 4
        events = (await _call(session, "get_thread", thread_id=tid, events=1000))["events"]
        [event] = [e for e in events if e["kind"] == "budget_raised"]
        assert event["budget"]["max_model_calls"] == 4 and event["by"] == "local"


async def test_a_thread_launched_over_mcp_records_its_agent_for_the_cli(tmp_path: Path) -> None:
    """A thread started through `threadline mcp` records the reference its agent was loaded
    from, as a CLI launch does: `threadline approve` and `replay` need no --agent."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(HERE / "deploy_agent.py", tmp_path / "deploy_agent.py")
    params = _stdio(tmp_path, "deploy_agent.py:agent")
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        launched = await _call(session, "launch_thread", agent="deployer", message="deploy v1.2")
    assert launched["status"] == "awaiting_approval"
    thread_id = launched["thread_id"]
    async with SQLiteStore(tmp_path / "threads.db") as store:
        thread = await store.load(thread_id)
    assert thread.metadata["agent_ref"] == f"{tmp_path / 'deploy_agent.py'}:agent"
    cli = [sys.executable, "-m", "threadline"]
    run = partial(subprocess.run, env=_env(tmp_path), cwd=elsewhere, capture_output=True, text=True)
    approved = run([*cli, "approve", thread_id], timeout=60)
    assert approved.returncode == 0, approved.stderr
    assert f"thread {thread_id} is done" in approved.stdout
    replayed = run([*cli, "replay", thread_id], timeout=60)
    assert replayed.returncode == 0 and "no divergence" in replayed.stdout, replayed.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    async def make() -> dict[str, str]:
        async with SQLiteStore(tmp_path / "threads.db") as store:
            _, ops = await create_key(key_store(store), "ops", ["launch", "respond", "read"])
            _, viewer = await create_key(key_store(store), "viewer", ["read"])
        return {"ops": ops, "viewer": viewer}

    import asyncio

    return asyncio.run(make())


@pytest.fixture
def mcp_http(tmp_path: Path, keys: dict[str, str]) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "threadline", "mcp", "--agent", REF]
        + ["--transport", "http", "--port", str(port)],
        env=_env(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"threadline mcp exited with {proc.returncode}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _client(key: str | None, **extra: str) -> httpx2.AsyncClient:
    headers = ({"Authorization": f"Bearer {key}"} if key else {}) | extra
    return httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60, read=120))


async def test_http_requires_a_key_and_its_scopes(mcp_http: str, keys: dict[str, str]) -> None:
    async with _client(None) as raw:  # no key: refused before any MCP processing
        response = await raw.post(
            mcp_http,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream"},
        )
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
    async with _client("tl_not-a-real-key") as raw:
        response = await raw.post(mcp_http, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert response.status_code == 401

    async with (
        _client(keys["viewer"]) as http,
        streamable_http_client(mcp_http, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        assert (await _call(session, "list_pending"))["pending"] == []
        assert "'launch' scope" in await _error(
            session, "launch_thread", agent="deployer", message="deploy v3"
        )

    async with (
        _client(keys["ops"]) as http,
        streamable_http_client(mcp_http, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        assert {t.name for t in (await session.list_tools()).tools} >= TOOLS
        await _launch_approve_done(session, "ops")
        # raising a budget is the admin scope's, as on the HTTP API
        message = await _error(session, "raise_budget", thread_id="th_x", max_model_calls=9)
        assert "'admin' scope" in message


async def test_http_launch_joins_the_caller_s_trace(
    mcp_http: str, keys: dict[str, str], tmp_path: Path
) -> None:
    """A `traceparent` on the MCP HTTP request is stored with the thread (as the HTTP API
    does), so its spans continue the caller's trace; an invalid one is ignored."""
    caller_trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    launched = {}
    for header in (caller_trace, "00-not-a-trace-01"):
        async with (
            _client(keys["ops"], traceparent=header) as http,
            streamable_http_client(mcp_http, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            out = await _call(session, "launch_thread", agent="deployer", message="deploy v9")
            launched[header] = out["thread_id"]
    async with SQLiteStore(tmp_path / "threads.db") as store:
        traced = await store.load(launched[caller_trace])
        untraced = await store.load(launched["00-not-a-trace-01"])
    assert traced.metadata.get("traceparent") == caller_trace
    assert "traceparent" not in untraced.metadata


async def test_the_verdict_tools_are_declared_like_the_other_tools() -> None:
    """`approve` and `reject` are one function registered twice from a table: each must
    still carry its own name, description and argument schema, as a written tool does."""
    server = build_server(Runtime(MemoryStore(), model=ScriptedModel([])))
    tools = {t.name: t for t in await server.list_tools()}
    assert [name for name in tools if name in ("approve", "reject")] == ["approve", "reject"]
    for name, opening in (("approve", "Approve a pending"), ("reject", "Reject a pending")):
        tool = tools[name]
        assert tool.description is not None and tool.description.startswith(opening)
        schema = tool.input_schema
        assert schema["title"] == f"{name}Arguments"
        assert schema["required"] == ["thread_id", "call_id"]
        assert set(schema["properties"]) == {"thread_id", "call_id", "comment"}
        assert tool.annotations is not None and tool.annotations.destructive_hint is False
