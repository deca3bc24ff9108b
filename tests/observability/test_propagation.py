"""W3C traceparent: what is accepted, and a launch over HTTP stores only a valid one."""

from __future__ import annotations

from pathlib import Path

import pytest

from server_support import DEFAULT_KEYS, deploy_model, start_server
from threadline import Agent
from threadline.observability.propagation import (
    TRACEPARENT_KEY,
    parse_traceparent,
    thread_trace_id,
    trace_parent_of,
)

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_valid_headers_parse() -> None:
    parsed = parse_traceparent(VALID)
    assert parsed is not None and parsed.sampled
    assert parsed.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert parsed.span_id == 0x00F067AA0BA902B7
    assert parsed.header() == VALID
    unsampled = parse_traceparent(VALID[:-2] + "00")
    assert unsampled is not None and not unsampled.sampled
    # a later version may append fields; version 00 may not
    assert parse_traceparent("01" + VALID[2:] + "-extra") is not None


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        VALID.upper(),  # hex must be lowercase
        "ff" + VALID[2:],  # version ff is invalid
        VALID + "-extra",  # version 00 has exactly four fields
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",  # all-zero span id
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace id
    ],
)
def test_invalid_headers_are_ignored(header: str | None) -> None:
    assert parse_traceparent(header) is None


def test_a_thread_without_a_valid_one_gets_its_own_trace() -> None:
    for metadata in ({}, {TRACEPARENT_KEY: "nonsense"}, {TRACEPARENT_KEY: 42}):
        parent = trace_parent_of("th_1", metadata)
        assert parent.trace_id == thread_trace_id("th_1") and parent.sampled
    assert trace_parent_of("th_1", {TRACEPARENT_KEY: VALID}) == parse_traceparent(VALID)


def test_the_launch_stores_a_valid_traceparent_only(tmp_path: Path, deploybot: Agent) -> None:
    server = start_server(
        tmp_path, [deploybot], deploy_model(environment="staging"), keys=DEFAULT_KEYS
    )
    body = {"agent": "deploybot", "message": "deploy the backend to staging", "wait": True}
    try:
        with server.client("admin") as admin:
            good = admin.post("/v1/threads", json=body, headers={"traceparent": VALID}).json()
            bad = admin.post("/v1/threads", json=body, headers={"traceparent": "00-zz"}).json()
            none = admin.post("/v1/threads", json=body).json()
            # metadata the caller set itself wins over the header
            mine = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
            own = admin.post(
                "/v1/threads",
                json={**body, "metadata": {TRACEPARENT_KEY: mine}},
                headers={"traceparent": VALID},
            ).json()
    finally:
        server.stop()
    assert good["metadata"][TRACEPARENT_KEY] == VALID
    assert TRACEPARENT_KEY not in bad["metadata"] and TRACEPARENT_KEY not in none["metadata"]
    assert own["metadata"][TRACEPARENT_KEY] == mine
    assert good["status"] == bad["status"] == "done"
