"""Tool retries against a real MCP server that goes away and comes back (issue 13): the
MCP client says `RetryableToolError` ("cannot reach MCP server"), the runtime records the
failed attempts and tries again after its backoff, and the call that finally reaches the
restarted server is the one result the model sees.

The server's tools have a breaker that opens on the first failure: the call keeps its
retries anyway (the breaker admits calls, not attempts). The restarted server is started
before the run and held ready, so it listens at once when let: the test is about the
retries, not about how long Python takes to start on a loaded machine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

pytest.importorskip("mcp")

from mcp_support import HeldShop, start_http_shop  # noqa: E402

from threadline import Agent, Runtime, ToolBreaker, ToolRetry, replay_thread  # noqa: E402
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
    patient = ToolRetry(max_attempts=8, base_delay=1.0, max_delay=4.0, sleep_limit=10)
    opens_at_once = ToolBreaker(failure_threshold=1)
    try:
        server = MCPServer("shop", url=url, retry=patient, breaker=opens_at_once)
        tools = await discover(server)
    finally:
        first.kill()
        first.wait(timeout=10)
    assert all(t.retry is patient and t.breaker is opens_at_once for t in tools)
    second = await asyncio.to_thread(HeldShop, tmp_path, shop_log, port)
    failed = asyncio.Event()

    def watch(thread: Thread, events: Sequence[Event]) -> None:
        if any(isinstance(e, ToolAttemptFailed) for e in events):
            failed.set()

    model = ScriptedModel(
        [intent("lookup", order_id="o7"), intent("done_for_now", message="o7 shipped")],
        follow_thread=True,
    )
    agent = Agent("shop", tools=tools, model=model)
    try:
        async with SQLiteStore(tmp_path / "t.db") as store:
            rt = Runtime(store, agents=[agent], observers=[watch])
            run = asyncio.create_task(rt.launch(agent, "where is o7?"))
            await asyncio.wait_for(failed.wait(), 60)  # the server is down: attempt 1 failed
            (breaker,) = {rt.tool_runs.breaker(t) for t in tools if t.name == "lookup"}
            assert breaker is not None and breaker.state == "open"
            await asyncio.to_thread(second.listen)
            thread = await store.load((await asyncio.wait_for(run, 120)).id)
    finally:
        second.stop()
    assert thread.status == Status.DONE
    attempts = [e for e in thread.events if isinstance(e, ToolAttemptFailed)]
    assert attempts and all("MCP server shop" in a.message for a in attempts)
    assert all("connect" in a.message.lower() for a in attempts), "the cause, not a wrapper"
    assert [a.attempt for a in attempts] == list(range(1, len(attempts) + 1))
    (result,) = [e for e in thread.events if e.kind == "tool_result"]
    assert "o7" in json.dumps(result.result)
    assert not any(e.kind == "tool_error" for e in thread.events), "not refused by the breaker"
    assert _served(shop_log) == ["lookup"], "reached the server once, when it was up"
    derived = replay_thread(agent, thread)
    assert [e.model_dump() for e in derived.events] == [e.model_dump() for e in thread.events]
