"""Tool retries against a real MCP server that goes away and comes back (issue 13): the
MCP client says `RetryableToolError` ("cannot reach MCP server"), the runtime records the
failed attempts and tries again after its backoff, and the call that finally reaches the
restarted server is the one result the model sees."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

pytest.importorskip("mcp")

from mcp_support import start_http_shop  # noqa: E402

from threadline import Agent, Runtime, ToolRetry, replay_thread  # noqa: E402
from threadline.events import Event, Status, Thread, ToolAttemptFailed  # noqa: E402
from threadline.integrations.mcp import MCPServer, discover  # noqa: E402
from threadline.stores import SQLiteStore  # noqa: E402
from threadline.testing import ScriptedModel, intent  # noqa: E402


def _served(log: Path) -> list[str]:
    """The tools the shop server ran, from its own log."""
    return [json.loads(line)["tool"] for line in log.read_text().splitlines()]


async def test_a_lookup_is_tried_again_until_the_restarted_server_answers(
    tmp_path: Path, shop_log: Path
) -> None:
    first, url = start_http_shop(tmp_path, shop_log)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    # patient enough for a Python process to start on a loaded machine; slept in process
    patient = ToolRetry(max_attempts=8, base_delay=1.0, max_delay=4.0, sleep_limit=10)
    try:
        tools = await discover(MCPServer("shop", url=url, retry=patient))
    finally:
        first.kill()
        first.wait(timeout=10)
    assert all(t.retry is patient for t in tools)
    failed = asyncio.Event()

    def watch(thread: Thread, events: Sequence[Event]) -> None:
        if any(isinstance(e, ToolAttemptFailed) for e in events):
            failed.set()

    model = ScriptedModel(
        [intent("lookup", order_id="o7"), intent("done_for_now", message="o7 shipped")],
        follow_thread=True,
    )
    agent = Agent("shop", tools=tools, model=model)
    async with SQLiteStore(tmp_path / "t.db") as store:
        rt = Runtime(store, agents=[agent], observers=[watch])
        run = asyncio.create_task(rt.launch(agent, "where is o7?"))
        await asyncio.wait_for(failed.wait(), 60)  # the server is down: attempt 1 failed
        second, _ = await asyncio.to_thread(start_http_shop, tmp_path, shop_log, port)
        try:
            thread = await asyncio.wait_for(run, 120)
        finally:
            second.kill()
            second.wait(timeout=10)
        thread = await store.load(thread.id)
    assert thread.status == Status.DONE
    attempts = [e for e in thread.events if isinstance(e, ToolAttemptFailed)]
    assert attempts and all("MCP server shop" in a.message for a in attempts)
    assert [a.attempt for a in attempts] == list(range(1, len(attempts) + 1))
    (result,) = [e for e in thread.events if e.kind == "tool_result"]
    assert "o7" in json.dumps(result.result)
    assert not any(e.kind == "tool_error" for e in thread.events)
    assert _served(shop_log) == ["lookup"], "reached the server once, when it was up"
    derived = replay_thread(agent, thread)
    assert [e.model_dump() for e in derived.events] == [e.model_dump() for e in thread.events]
