"""A recorded-response Slack Web API on loopback, for the Slack channel's tests.

Slack cannot be reached from here, so `slack_sdk`'s real `AsyncWebClient` is pointed (its
`base_url`) at this small HTTP server: it records every Web API call (method, token, JSON
or form arguments) and answers the way Slack answers (`{"ok": true, "channel", "ts", ...}`,
or `{"ok": false, "error": ...}` when a test asks for a failure). Everything between the
channel and the socket is the SDK's own code.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx

SIGNING = "8f742231b10e8888abcd99yyyzzz85a5"
"""The Slack app's signing secret in these tests."""


@dataclass
class Call:
    method: str
    token: str
    args: dict[str, Any]


@dataclass
class SlackAPI:
    """The recorder. `calls` in arrival order; `fail[method] = "error"` fails the next one."""

    calls: list[Call] = field(default_factory=list)
    fail: dict[str, str] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ts: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/api/"

    def start(self) -> SlackAPI:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length).decode()
                if "json" in (self.headers.get("content-type") or ""):
                    args = json.loads(raw or "{}")
                else:
                    args = {k: v[0] for k, v in parse_qs(raw).items()}
                token = (self.headers.get("authorization") or "").removeprefix("Bearer ")
                body = api.answer(self.path.rsplit("/", 1)[-1], token, args)
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json; charset=utf-8")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def answer(self, method: str, token: str, args: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.calls.append(Call(method, token, args))
            error = self.fail.pop(method, None)
            if error:
                return {"ok": False, "error": error}
            channel = str(args.get("channel", ""))
            if channel.startswith("#"):
                channel = "C" + channel[1:].upper()  # Slack answers with the channel's id
            ts = f"1800000000.{next(self._ts):06d}"
            if method == "chat.postMessage":
                return {
                    "ok": True,
                    "channel": channel,
                    "ts": ts,
                    "message": {"text": args.get("text")},
                }
            if method == "chat.update":
                return {"ok": True, "channel": channel, "ts": args.get("ts")}
            if method == "chat.postEphemeral":
                return {"ok": True, "message_ts": ts}
            if method == "views.open":
                return {"ok": True, "view": {"id": "V" + ts.replace(".", "")}}
            return {"ok": False, "error": "unknown_method"}

    def of(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def wait(self, method: str, count: int = 1, timeout: float = 20) -> list[Call]:
        """The calls of `method` once there are at least `count` of them."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.of(method)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)


# -- requests as Slack sends them (signed here independently of slack_sdk) ----------


def signed(body: bytes, *, secret: str = SIGNING, at: float | None = None) -> dict[str, str]:
    ts = str(int(time.time() if at is None else at))
    mac = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256)
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": "v0=" + mac.hexdigest()}


def post_json(url: str, path: str, payload: dict[str, Any], **sign: Any) -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", **signed(body, **sign)}
    return httpx.post(f"{url}/v1/channels/slack/{path}", content=body, headers=headers)


def post_form(url: str, path: str, form: dict[str, str], **sign: Any) -> httpx.Response:
    body = urlencode(form).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", **signed(body, **sign)}
    return httpx.post(f"{url}/v1/channels/slack/{path}", content=body, headers=headers)


def mention(text: str, *, ts: str = "1700000000.000100", user: str = "UAMY") -> dict[str, Any]:
    return {
        "type": "event_callback",
        "event_id": f"Ev{ts}",
        "event": {"type": "app_mention", "user": user, "text": text, "channel": "CDEV", "ts": ts},
    }


def click(action: str, value: str, *, user: str = "UALICE", ts: str = "") -> dict[str, str]:
    payload = {
        "type": "block_actions",
        "user": {"id": user},
        "channel": {"id": "CDEV"},
        "message": {"ts": ts},
        "trigger_id": "trigger-1",
        # Slack stamps every click (so two clicks never sign the same body).
        "actions": [
            {"action_id": f"threadline_{action}", "value": value, "action_ts": str(time.time_ns())}
        ],
    }
    return {"payload": json.dumps(payload)}
