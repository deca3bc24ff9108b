"""Recorded HTTP exchanges for the OpenAI and Anthropic SDKs.

The real APIs are unreachable from the test machines, so these tests replay recorded
responses through the SDKs' real code path. The SDKs here are built on `httpx2`, which
`respx` (an httpx mock) cannot intercept; `httpx2.MockTransport` is the equivalent
transport-level hook: the SDK builds, sends and parses real HTTP messages, only the
socket is replaced. Every request the SDK sends is kept for assertions.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx2

Reply = dict[str, Any] | Callable[[httpx2.Request], Any] | BaseException | tuple[int, Any]


class Recorded:
    """Replays `replies` in order (the last one repeats); records every request."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)
        self.requests: list[httpx2.Request] = []

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]

    async def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        if isinstance(reply, BaseException):
            raise reply
        if callable(reply):
            reply = reply(request)
            if asyncio.iscoroutine(reply):
                reply = await reply
            if isinstance(reply, httpx2.Response):
                return reply
        status, body, headers = 200, reply, {}
        if isinstance(reply, tuple):
            status, body = reply[0], reply[1]
            headers = reply[2] if len(reply) > 2 else {}
        if isinstance(body, str | bytes):
            return httpx2.Response(status, content=body, headers=headers)
        return httpx2.Response(status, json=body, headers=headers)

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self.handle))


class Sleeps:
    """An injectable `sleep` that records delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def openai_completion(
    *,
    content: str | None = None,
    tool_calls: list[tuple[str, str]] | None = None,
    model: str = "gpt-4.1-mini-2025-04-14",
    prompt_tokens: int = 120,
    completion_tokens: int = 18,
    cached_tokens: int = 0,
) -> dict[str, Any]:
    """A chat.completion body as OpenAI returns it (shape recorded from the API)."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": [],
    }
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}abc",
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            for i, (name, arguments) in enumerate(tool_calls)
        ]
    return {
        "id": "chatcmpl-BxR0ecorded",
        "object": "chat.completion",
        "created": 1753900000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if tool_calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_6f2eabb9a5",
    }


def openai_error(status: int, message: str, kind: str = "server_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def anthropic_message(
    *,
    text: str | None = None,
    tool_uses: list[tuple[str, dict[str, Any]]] | None = None,
    model: str = "claude-sonnet-4-6",
    input_tokens: int = 310,
    output_tokens: int = 42,
    cache_creation_input_tokens: int = 0,
    cache_read_input_tokens: int = 0,
    cache_creation_1h_input_tokens: int = 0,
) -> dict[str, Any]:
    """A Messages API response body (shape recorded from the API): the usage's
    `cache_creation` splits the cache writes by lifetime, `cache_creation_1h_input_tokens`
    of them 1-hour entries and the rest 5-minute ones."""
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "text", "text": text})
    for i, (name, arguments) in enumerate(tool_uses or []):
        content.append(
            {"type": "tool_use", "id": f"toolu_01{i}Recorded", "name": name, "input": arguments}
        )
    return {
        "id": "msg_01Recorded",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if tool_uses else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": cache_creation_input_tokens,
            "cache_read_input_tokens": cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": cache_creation_input_tokens
                - cache_creation_1h_input_tokens,
                "ephemeral_1h_input_tokens": cache_creation_1h_input_tokens,
            },
        },
    }


def anthropic_error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}
