"""The queries written once (`SQLStore`), on rows this code did not write."""

from __future__ import annotations

import json
from datetime import timedelta

from store_env import StoreEnv, needs_sql

from threadline.events import Status, ToolResult, UserMessage, utcnow
from threadline.stores import SQLStore


def _old_rows(env: StoreEnv, thread_id: str) -> None:
    """A thread as earlier releases wrote it: raw rows, not written by this code."""
    now = utcnow()
    events = [
        UserMessage(seq=0, at=now, text="hi"),
        ToolResult(seq=1, at=now, call_id="c1", tool="t", result={"ok": True}),
    ]
    state = {"next_seq": 2, "model_calls": 0, "pending": [], "last_kind": "tool_result"}
    json_cast = "::jsonb" if env.kind == "postgres" else ""
    time = now.isoformat()
    env.sql(
        "INSERT INTO threads (id, agent, status, next_seq, schema_version, metadata, state, "
        f"created_at, updated_at) VALUES (?, 'old', 'running', 2, 1, ?{json_cast}, "
        f"?{json_cast}, ?, ?)",
        (thread_id, json.dumps({"channel": "cli"}), json.dumps(state), time, time),
    )
    for e in events:
        env.sql(
            "INSERT INTO events (thread_id, seq, kind, at, body) "
            f"VALUES (?, ?, ?, ?, ?{json_cast})",
            (thread_id, e.seq, e.kind, e.at.isoformat(), e.model_dump_json()),
        )


async def test_rows_written_by_earlier_versions_load_lease_and_append(store_env: StoreEnv) -> None:
    needs_sql(store_env)
    store = store_env.open()
    assert isinstance(store, SQLStore)
    await store.ping()
    _old_rows(store_env, "th_old")
    thread = await store.load("th_old")
    assert [e.seq for e in thread.events] == [0, 1]
    assert thread.metadata == {"channel": "cli"} and thread.agent == "old"
    summary = await store.get("th_old")
    assert (summary.status, summary.next_seq) == (Status.RUNNING, 2)
    assert [s.id for s in (await store.list(agent="old")).items] == ["th_old"]
    [lease] = await store.lease("w", ttl=30, thread_ids=["th_old"])
    assert timedelta(seconds=20) < lease.expires - utcnow() <= timedelta(seconds=30)
    fresh = store_env.open()  # no cached state: the stored projection is read
    await fresh.append(
        "th_old",
        [ToolResult(seq=2, at=utcnow(), call_id="c2", tool="t", result=2)],
        expected_seq=2,
        lease=lease,
    )
    assert len(await store.load("th_old")) == 3
