"""Counting with an OpenAI-compatible server's count endpoint (`ServerTokenizer`), against a
real HTTP server on loopback; the llama-cpp-python server itself is in
test_openai_server.py."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from threadline.models.server_tokens import ServerTokenizer


class _Counter(BaseHTTPRequestHandler):
    """Answers `{"count": words}` and remembers each request's body and auth header."""

    seen: list[tuple[dict[str, Any], str | None]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((body, self.headers.get("Authorization")))
        reply = json.dumps({"count": len(body["input"].split())}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def counting_server() -> Iterator[str]:
    _Counter.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/extras/tokenize/count"
    finally:
        server.shutdown()
        server.server_close()


def test_the_count_is_the_servers(counting_server: str) -> None:
    count = ServerTokenizer(counting_server, "smollm2", api_key="secret")
    assert count("one two three") == 3
    assert count("") == 0  # nothing asked for nothing
    assert _Counter.seen == [({"input": "one two three", "model": "smollm2"}, "Bearer secret")]


def test_a_server_that_cannot_count_is_counted_over_never_failing() -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    count = ServerTokenizer(f"http://127.0.0.1:{port}/extras/tokenize/count", "m", timeout=2)
    assert count("x" * 30) == 10  # ceil(bytes / 3), the deliberate overestimate
    assert count("é" * 3) == 2


class _BusyOnce(BaseHTTPRequestHandler):
    """Refuses the first request (503: busy), answers `{"count": words}` after; counts them."""

    requests = 0

    def do_POST(self) -> None:
        type(self).requests += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if type(self).requests == 1:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        reply = json.dumps({"count": len(body["input"].split())}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_after_a_failed_count_the_server_is_not_asked_again_for_a_while() -> None:
    """A llama-cpp-python server generating holds the count endpoint behind its lock: each
    count would wait the whole timeout (5 s measured, every one of them). After one failure
    the counts are approximated without asking, for `rest` seconds; then it is asked again."""
    _BusyOnce.requests = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BusyOnce)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    now = [100.0]
    url = f"http://127.0.0.1:{server.server_address[1]}/extras/tokenize/count"
    try:
        count = ServerTokenizer(url, "m", rest=30.0, clock=lambda: now[0])
        assert count("a b c") == 2  # refused: ceil(5 bytes / 3)
        assert [count("d e f g h i") for _ in range(3)] == [4, 4, 4]  # not asked: approximated
        assert _BusyOnce.requests == 1
        now[0] += 30.0
        assert count("d e f g h i") == 6  # rested: asked again, and it counts
        assert _BusyOnce.requests == 2
    finally:
        server.shutdown()
        server.server_close()
