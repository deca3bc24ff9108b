"""MCP tools as intents, against a real MCP server process (tests/integrations/shop_server.py,
written with the SDK's MCPServer) over stdio and over streamable HTTP on loopback, driven
through a real Runtime on SQLite."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from mcp_support import SHOP, start_http_shop  # noqa: E402

from threadline import Agent, Runtime  # noqa: E402
from threadline.events import Status, Thread  # noqa: E402
from threadline.integrations.mcp import (  # noqa: E402
    MCPServer,
    MCPTool,
    ToolFlags,
    discover,
    follow,
    schema_version,
    tool_result_value,
)
from threadline.integrations.mcp.client import connection  # noqa: E402
from threadline.stores import SQLiteStore  # noqa: E402
from threadline.testing import ScriptedModel, intent  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _served(log: Path) -> list[dict[str, Any]]:
    """What the shop server actually ran, from its own log."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def stdio_shop(log: Path, **options: Any) -> MCPServer:
    return MCPServer(
        "shop", command=[sys.executable, str(SHOP), "stdio"], env={"SHOP_LOG": str(log)}, **options
    )


@pytest.fixture(params=["stdio", "http"])
async def shop(
    request: pytest.FixtureRequest, tmp_path: Path, shop_log: Path
) -> AsyncIterator[MCPServer]:
    if request.param == "stdio":
        server = stdio_shop(shop_log)
        yield server
    else:
        proc, url = start_http_shop(tmp_path, shop_log)
        try:
            yield MCPServer("shop", url=url)
        finally:
            proc.kill()
            proc.wait(timeout=10)
    for conn in list(server._connections.values()) if request.param == "stdio" else []:
        await conn.aclose()


async def _runtime(tmp_path: Path, agent: Agent) -> Runtime:
    store = SQLiteStore.from_url(f"sqlite:///{tmp_path / 'threads.db'}")
    return Runtime(store, agents=[agent])


def _kinds(thread: Thread) -> list[str]:
    return [e.kind for e in thread.events]


async def test_discovered_tools_are_intents_with_the_published_schema(shop: MCPServer) -> None:
    tools = {t.name: t for t in await discover(shop)}
    assert {"lookup", "refund", "audit", "open_gift_cards"} <= set(tools)
    lookup, refund = tools["lookup"], tools["refund"]
    assert isinstance(lookup, MCPTool) and lookup.remote_name == "lookup"
    # read-only: no side effects, no approval; destructive and not idempotent: approval
    assert (lookup.side_effects, lookup.idempotent, lookup.approval) == (False, True, "never")
    assert (refund.side_effects, refund.idempotent, refund.approval) == (True, False, "always")
    # the schema shown is the server's, verbatim; the version is a hash of it
    assert refund.schema()["properties"]["amount"] == {
        "exclusiveMinimum": 0,
        "title": "Amount",
        "type": "number",
    }
    assert refund.version == schema_version(refund.schema(), refund.description)
    assert refund.key == f"refund@{refund.version}"


async def test_read_only_runs_destructive_pauses_for_approval(
    shop: MCPServer, shop_log: Path, tmp_path: Path
) -> None:
    model = ScriptedModel(
        [
            intent("lookup", order_id="o1"),
            intent("refund", order_id="o1", amount=5),
            intent("done_for_now", message="refunded"),
        ]
    )
    agent = Agent("shop", tools=await discover(shop), model=model)
    rt = await _runtime(tmp_path, agent)
    thread = await rt.launch(agent, "refund 5 on o1")
    # lookup ran at once (no approval), refund waits for a human
    assert thread.status == Status.AWAITING_APPROVAL
    result = next(e for e in thread.events if e.kind == "tool_result")
    assert result.tool == "lookup" and "shipped" in json.dumps(result.result)
    assert "approval_requested" not in _kinds(thread)[: _kinds(thread).index("tool_result")]
    assert [s["tool"] for s in _served(shop_log)] == ["lookup"]  # refund has not run

    call_id = next(e.call_id for e in thread.events if e.kind == "approval_requested")
    await rt.approve(thread.id, call_id, by="ops")
    thread = await rt.advance(thread.id)
    assert thread.status == Status.DONE
    refund = [e for e in thread.events if e.kind == "tool_result"][-1]
    assert refund.result == {"refunded": 5, "order_id": "o1"}  # structuredContent
    assert "tool_started" in _kinds(thread)  # a side effect: checkpointed before it ran
    assert [s["tool"] for s in _served(shop_log)] == ["lookup", "refund"]
    await rt.store.close()


async def test_invalid_arguments_never_reach_the_server(
    shop: MCPServer, shop_log: Path, tmp_path: Path
) -> None:
    model = ScriptedModel(
        [intent("refund", order_id="o1", amount=-3), intent("done_for_now", message="no")]
    )
    agent = Agent("shop", tools=await discover(shop), model=model)
    rt = await _runtime(tmp_path, agent)
    thread = await rt.launch(agent, "refund")
    bad = next(e for e in thread.events if e.kind == "invalid_output")
    assert "amount" in bad.reason
    assert _served(shop_log) == []
    await rt.store.close()


async def test_error_results_become_tool_errors(shop: MCPServer, tmp_path: Path) -> None:
    model = ScriptedModel([intent("audit", order_id="o9"), intent("done_for_now", message="x")])
    agent = Agent("shop", tools=await discover(shop), model=model)
    rt = await _runtime(tmp_path, agent)
    thread = await rt.launch(agent, "audit o9")
    error = next(e for e in thread.events if e.kind == "tool_error")
    assert error.tool == "audit" and error.error_type == "RemoteToolError"
    assert "audit" in error.message
    assert thread.status == Status.DONE
    await rt.store.close()


async def test_server_killed_mid_call_takes_the_maybe_ran_path(
    shop: MCPServer, shop_log: Path, tmp_path: Path
) -> None:
    model = ScriptedModel([intent("refund", order_id="o2", amount=666)])
    agent = Agent("shop", tools=await discover(shop), model=model)
    rt = await _runtime(tmp_path, agent)
    thread = await rt.launch(agent, "refund 666 on o2")
    call_id = next(e.call_id for e in thread.events if e.kind == "approval_requested")
    await rt.approve(thread.id, call_id)
    thread = await rt.advance(thread.id)

    # The server received the refund and died before answering: the outcome is unknown.
    assert [s["tool"] for s in _served(shop_log)] == ["refund"]
    assert thread.status == Status.ESCALATED
    kinds = _kinds(thread)
    started = kinds.index("tool_started")
    assert "tool_result" not in kinds[started:] and "tool_error" not in kinds[started:]
    escalated = thread.events[-1]
    assert escalated.kind == "escalated" and "may have run" in escalated.reason
    assert escalated.details["call_id"] == call_id
    assert escalated.details["arguments"] == {"order_id": "o2", "amount": 666}
    assert escalated.details["idempotency_key"]

    # Advancing again never re-sends it: the thread stays escalated, the server saw it once.
    thread = await rt.advance(thread.id)
    assert thread.status == Status.ESCALATED
    assert [s["tool"] for s in _served(shop_log)] == ["refund"]
    await rt.store.close()


async def test_a_dropped_stdio_session_reconnects(shop_log: Path, tmp_path: Path) -> None:
    server = stdio_shop(shop_log)
    conn = connection(server)
    first = await conn.call("lookup", {"order_id": "a"}, side_effects=False, idempotent=True)
    assert first == {"result": "order a: shipped"}
    pid = _served(shop_log)[-1]["pid"]
    os.kill(pid, 9)  # the server dies between calls
    second = await conn.call("lookup", {"order_id": "b"}, side_effects=False, idempotent=True)
    assert second == {"result": "order b: shipped"}
    assert conn.sessions_opened == 2 and _served(shop_log)[-1]["pid"] != pid
    await conn.aclose()


async def test_a_dropped_http_session_reconnects(shop_log: Path, tmp_path: Path) -> None:
    first_proc, url = start_http_shop(tmp_path, shop_log)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    server = MCPServer("shop", url=url)
    conn = connection(server)
    try:
        assert await conn.call("lookup", {"order_id": "a"}, side_effects=False, idempotent=True)
        first_proc.kill()  # the server restarts between calls: its sessions are gone
        first_proc.wait(timeout=10)
        second_proc, _ = start_http_shop(tmp_path, shop_log, port=port)
        try:
            # a call that must not be re-sent: the dead session is found by a ping first,
            # so the refund goes out once, on a new session
            refund = await conn.call(
                "refund", {"order_id": "b", "amount": 1}, side_effects=True, idempotent=False
            )
            assert refund == {"refunded": 1, "order_id": "b"}
            assert [s["tool"] for s in _served(shop_log)].count("refund") == 1
            again = await conn.call(
                "lookup", {"order_id": "b"}, side_effects=False, idempotent=True
            )
            assert again == {"result": "order b: shipped"}
            assert conn.sessions_opened == 2
            pids = {s["pid"] for s in _served(shop_log)}
            assert len(pids) == 2
        finally:
            await conn.aclose()
            second_proc.kill()
            second_proc.wait(timeout=10)
    finally:
        first_proc.kill()


async def test_list_changed_adds_the_new_tool_to_the_agent(shop_log: Path) -> None:
    server = stdio_shop(shop_log)
    agent = Agent("shop", tools=await discover(server))
    follow(agent, server)
    assert agent.registry.get("gift_card") is None
    await connection(server).call("open_gift_cards", {}, side_effects=True, idempotent=True)
    for _ in range(400):  # the notification is handled in the background
        if agent.registry.get("gift_card") is not None:
            break
        await asyncio.sleep(0.025)
    gift = agent.registry.get("gift_card")
    assert isinstance(gift, MCPTool) and gift in agent.visible_tools()
    variants = [v["properties"]["intent"]["const"] for v in agent.output_schema()["oneOf"]]
    assert "gift_card" in variants
    await connection(server).aclose()


def test_the_agent_rules_come_before_the_server_hints() -> None:
    read_only = {"readOnlyHint": True}
    destructive = {"destructiveHint": True}
    server = MCPServer(
        "s",
        command=["true"],
        approval={"lookup": "always", "delete_*": "never"},
        flags={"lookup": ToolFlags(side_effects=True)},
    )
    # a hint never lowers an approval the agent requires
    assert server.policy("lookup", read_only).approval == "always"
    assert server.policy("lookup", read_only).side_effects  # the agent overrides the flag
    # a glob rule wins over a hint; no rule and no hint: the MCP defaults (destructive)
    assert server.policy("delete_user", destructive).approval == "never"
    assert server.policy("other", None).approval == "always"
    assert server.policy("other", None).side_effects
    assert not server.policy("other", None).idempotent
    assert server.policy("add", {"destructiveHint": False}).approval == "never"
    distrust = MCPServer("s", command=["true"], trust_annotations=False)
    assert distrust.policy("lookup", read_only).approval == "always"
    assert distrust.policy("lookup", read_only).side_effects
    strict = MCPServer("s", command=["true"], default_approval="always")
    assert strict.policy("lookup", read_only).approval == "always"


def test_server_configuration_is_checked() -> None:
    from threadline.errors import ConfigError

    with pytest.raises(ConfigError, match="exactly one"):
        MCPServer("s")
    with pytest.raises(ConfigError, match="exactly one"):
        MCPServer("s", command=["x"], url="http://h/mcp")
    with pytest.raises(ConfigError, match="approval"):
        MCPServer("s", command=["x"], approval={"*": "sometimes"})  # type: ignore[dict-item]
    server = MCPServer("s", url="http://h/mcp", headers_from_env={"Authorization": "NO_SUCH_VAR"})
    with pytest.raises(ConfigError, match="NO_SUCH_VAR"):
        server.http_headers()


async def test_http_headers_come_from_the_environment(
    tmp_path: Path, shop_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The header value is read from the environment when connecting (a wrong URL path
    shows the header is sent: the server answers, the tool list comes back)."""
    proc, url = start_http_shop(tmp_path, shop_log)
    try:
        monkeypatch.setenv("SHOP_TOKEN", "Bearer secret-1")
        server = MCPServer("shop", url=url, headers_from_env={"Authorization": "SHOP_TOKEN"})
        assert server.http_headers() == {"Authorization": "Bearer secret-1"}
        assert "secret" not in server.source
        assert {t.name for t in await discover(server)} >= {"lookup"}
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_results_map_text_structured_and_errors() -> None:
    from mcp.types import CallToolResult, ImageContent, TextContent

    from threadline.errors import RemoteToolError

    text = CallToolResult(content=[TextContent(type="text", text="hi")])
    assert tool_result_value(text) == "hi"
    structured = CallToolResult(
        content=[TextContent(type="text", text="{}")], structured_content={"a": 1}
    )
    assert tool_result_value(structured) == {"a": 1}
    mixed = CallToolResult(
        content=[
            TextContent(type="text", text="see"),
            ImageContent(type="image", data="aGVsbG8h", mime_type="image/png"),
        ]
    )
    assert tool_result_value(mixed) == [
        "see",
        {"type": "image", "mime_type": "image/png", "omitted_bytes": 6},
    ]
    with pytest.raises(RemoteToolError, match="nope"):
        tool_result_value(
            CallToolResult(content=[TextContent(type="text", text="nope")], is_error=True)
        )


# -- build and release: pins in the lock ----------------------------------------------------


def test_remote_pins_refuse_a_changed_gone_or_new_tool() -> None:
    from threadline.errors import LockMismatch
    from threadline.lockfile import check_remote_pins

    agent = Agent("a")
    pin = {"server": "s", "source": "http:x", "tool": "t", "version": "1", "schema_sha256": "aa"}
    check_remote_pins(agent, {"t@1": pin}, {"t@1": pin})
    with pytest.raises(LockMismatch, match="tool t \\(new schema"):
        check_remote_pins(agent, {"t@1": pin}, {"t@2": {**pin, "schema_sha256": "bb"}})
    with pytest.raises(LockMismatch, match="no longer published"):
        check_remote_pins(agent, {"t@1": pin}, {})
    with pytest.raises(LockMismatch, match="not built"):
        check_remote_pins(agent, {}, {"t@1": pin})


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threadline", *args],
        cwd=cwd,
        env={
            **os.environ,
            "THREADLINE_STORE": f"sqlite:///{cwd / 'threads.db'}",
            "THREADLINE_LOG": "off",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_build_pins_mcp_schemas_and_a_release_refuses_a_drifted_one(tmp_path: Path) -> None:
    ref = f"{ROOT / 'tests' / 'integrations' / 'shop_agent.py'}:agent"
    built = _cli(["build", "--agent", ref, "--lock", str(tmp_path / "threadline.lock")], tmp_path)
    assert built.returncode == 0, built.stderr
    lock = json.loads((tmp_path / "threadline.lock").read_text())
    pins = lock["agents"]["mcp_shop"]["mcp"]
    assert {p["tool"] for p in pins.values()} == {"lookup", "refund"}
    lookup = next(p for p in pins.values() if p["tool"] == "lookup")
    assert lookup["server"] == "shop" and lookup["source"].startswith("stdio:")

    same = _cli(["run", ref, "where is o1", "--locked", "--no-interactive"], tmp_path)
    assert same.returncode == 0, same.stderr

    drifted = _cli(
        ["run", ref, "where is o1", "--locked", "--no-interactive"], tmp_path, SHOP_SCHEMA="2"
    )
    assert drifted.returncode == 1
    assert "MCP server shop" in drifted.stderr and "lookup" in drifted.stderr
    assert "changed" in drifted.stderr
    # without --locked (not a release) the changed tool is simply a new version
    unlocked = _cli(["run", ref, "where is o1", "--no-interactive"], tmp_path, SHOP_SCHEMA="2")
    assert unlocked.returncode == 0, unlocked.stderr


def test_call_failures_are_judged_by_what_the_server_can_have_done() -> None:
    from mcp import MCPError
    from mcp.types import (
        CONNECTION_CLOSED,
        INTERNAL_ERROR,
        INVALID_PARAMS,
        INVALID_REQUEST,
        REQUEST_TIMEOUT,
    )

    from threadline.integrations.mcp.client import _classify

    # the request may have been processed: never re-send a non-idempotent call
    assert _classify(MCPError(CONNECTION_CLOSED, "Connection closed")) == "unknown"
    assert _classify(MCPError(REQUEST_TIMEOUT, "Request timed out")) == "unknown"
    assert _classify(MCPError(INTERNAL_ERROR, "Server returned an error response")) == "unknown"
    assert _classify(OSError("broken pipe")) == "unknown"
    # the server did not know the session: nothing was processed, safe to send again
    assert _classify(MCPError(INVALID_REQUEST, "Session not found")) == "unsent"
    assert _classify(MCPError(INVALID_REQUEST, "Session terminated")) == "unsent"
    # the server answered: the outcome is known
    assert _classify(MCPError(INVALID_PARAMS, "Invalid params")) == "failed"
    assert _classify(RuntimeError("Invalid structured content returned by tool x")) == "failed"
