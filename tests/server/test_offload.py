"""The server keeps answering while a large launch is rendered (issue 10, item 12).

The CPU-heavy work of a step (rendering, token counting, redaction, checking a result) runs
in the runtime's worker thread, not on the event loop: a 100,000-character launch (the
documented maximum) must not hold `/healthz`. The test asserts where the work ran and that
health checks were answered *during* it (ordering, not a time limit).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from server_support import start_server
from threadline import Agent, ContextSettings
from threadline.models.base import ModelProfile
from threadline.testing import FunctionModel, intent
from threadline.wire import MAX_TEXT

SPANS: list[tuple[str, float, float]] = []


def slow_count(text: str) -> int:
    """An exact-looking pure-Python tokenizer (one pass per character, as slow as a pure-
    Python BPE); records where and when it counted large text."""
    start = time.perf_counter()
    tokens = 0
    for _ in range(8):
        tokens = 0
        previous = " "
        for ch in text:
            if ch.isalnum() != previous.isalnum() or not ch.isalnum():
                tokens += 1
            previous = ch
    if len(text) >= MAX_TEXT // 2:
        SPANS.append((threading.current_thread().name, start, time.perf_counter()))
    return tokens


def test_health_is_answered_while_a_large_launch_is_rendered(tmp_path: Path) -> None:
    SPANS.clear()
    model = FunctionModel(
        lambda _: intent("done_for_now", message="read"),
        model_id="reader",
        profile=ModelProfile(context_window=128_000),
    )
    agent = Agent(
        "reader",
        instructions="Read it.",
        model=model,
        context=ContextSettings(tokenizer=slow_count),
    )
    live = start_server(tmp_path, [agent], None, keys={"admin": ["admin"]})
    answered: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=live.url, timeout=60) as c:
            while not stop.is_set():
                assert c.get("/healthz").status_code == 200
                answered.append(time.perf_counter())

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        message = ("The quick brown fox jumps over the lazy dog. " * 3_000)[:MAX_TEXT]
        with live.client("admin") as c:
            r = c.post(
                "/v1/threads",
                json={"agent": "reader", "message": message, "wait": True, "wait_timeout": 120},
            )
        assert r.status_code == 201 and r.json()["status"] == "done", r.text
    finally:
        stop.set()
        poller.join()
        live.stop()
    assert SPANS, "the large message was never counted"
    # Counted in the runtime's worker thread, never on the event loop's thread ...
    assert {name for name, _, _ in SPANS} == {"threadline-cpu_0"}
    # ... so while it counted, the loop answered health checks.
    assert any(start < t < end for _, start, end in SPANS for t in answered)
