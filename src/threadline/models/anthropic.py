"""Anthropic's Messages API on the official `anthropic` SDK, via tool use.

Three ways to get a typed intent out (`mode`):

* `intent` (default): the tools are compact signatures in the system text (described
  once, `ModelProfile.tools_in_prompt`) and one tool, `next_step`, whose input schema is
  the intent envelope `{"intent": <name>, "arguments": {...}}`, is forced with
  `tool_choice={"type": "tool", "name": "next_step"}`. Tool use still forces the answer,
  and the request is smaller: on the 200 airline runs 0.727 of the raw chat body against
  0.864 with native definitions (docs/performance.md). Each `next_step` input is the
  answer: it is returned as the JSON intent text (several as a JSON list) for `interpret`
  to validate, so a malformed envelope is an `invalid_output` the model sees, as in the
  JSON modes. A context that
  carries native definitions (`ContextSettings(native_tools=True)`, the messages format)
  is sent as in `tools` mode.
* `tools`: one native tool per `Context.tools` with `tool_choice={"type": "any"}`, so the
  model must pick an intent; `tool_use` blocks come back as native tool calls.
* `json`: no tools; the intent's JSON Schema (its envelope when the tools are in the
  prompt) is appended to the system prompt and the text answer is returned for
  `interpret` to parse (for models or gateways without tool use).

Prompt caching: the system block and the last message are marked `cache_control` (see
`_mark_cache`) with the entry's lifetime, `cache_ttl`: "5m" (default: no `ttl` sent, the
API's default; a write costs 1.25x input) or "1h" (`ttl: "1h"`, 2x input), worth it when a
thread's calls are further apart than 5 minutes (a person's approval between them). The
usage's `cache_creation` says how many written tokens went to each lifetime; the 1-hour
part is recorded as `cache_write_1h_tokens` and priced at its own rate.

As with every backend: the answer is returned verbatim, the SDK's retries are off
(`ResilientModel` retries), and every failure is raised as `ModelError`.
"""

from __future__ import annotations

import json
import os
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError, InvalidRequest, MissingExtraError, ModelError
from ..events import RawToolCall
from .base import Context, ModelOutput, ModelProfile, intent_envelope
from .calibration import Calibration, overflow
from .openai import tool_name_map
from .pricing import PriceTable
from .resilience import sdk_api_key, sdk_client, sdk_output, sdk_request

if TYPE_CHECKING:
    import anthropic

__all__ = ["CACHE_TTLS", "MODES", "NEXT_STEP", "AnthropicModel"]

Mode = Literal["intent", "tools", "json"]
MODES: tuple[Mode, ...] = ("intent", "tools", "json")
CacheTTL = Literal["5m", "1h"]
CACHE_TTLS: tuple[CacheTTL, ...] = ("5m", "1h")

NEXT_STEP = "next_step"
"""The one tool `intent` mode sends: its input is the intent envelope."""


class AnthropicModel:
    """A Claude model.

    Args:
        model: the model id (`claude-sonnet-4-5`); the id the API answers with is recorded.
        mode: `intent` (default), `tools` or `json` (see the module docstring).
        api_key: defaults to `ANTHROPIC_API_KEY`.
        base_url: defaults to `ANTHROPIC_BASE_URL`, then Anthropic itself.
        timeout: seconds the SDK waits for one response.
        temperature: sent only when given.
        cache_ttl: how long the prompt cache keeps what a call writes, "5m" or "1h".
        client / http_client: injected SDK client or `httpx2.AsyncClient` (tests).

    Raises:
        MissingExtraError: `anthropic` is not installed.
        ConfigError: no API key, or an unknown mode or cache TTL.
    """

    def __init__(
        self,
        model: str,
        *,
        mode: Mode = "intent",
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        temperature: float | None = None,
        cache_ttl: CacheTTL = "5m",
        prices: PriceTable | None = None,
        client: anthropic.AsyncAnthropic | None = None,
        http_client: Any = None,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"anthropic mode must be one of {', '.join(MODES)}, not {mode!r}")
        if cache_ttl not in CACHE_TTLS:
            raise ConfigError(
                f"anthropic cache_ttl must be one of {', '.join(CACHE_TTLS)}, not {cache_ttl!r}"
            )
        try:
            import anthropic
        except ImportError:
            raise MissingExtraError("anthropic", "anthropic") from None
        self.model = model
        self.mode: Mode = mode
        self.temperature = temperature
        self.cache_ttl: CacheTTL = cache_ttl
        # The API's default lifetime is 5 minutes: say `ttl` only for the other one.
        self._cache_mark = _EPHEMERAL if cache_ttl == "5m" else {**_EPHEMERAL, "ttl": cache_ttl}
        self.prices = prices or PriceTable()
        self._anthropic = anthropic
        if client is None:
            client = sdk_client(
                anthropic.AsyncAnthropic,
                sdk_api_key(api_key, "ANTHROPIC_API_KEY", "export it to use anthropic:"),
                base_url or os.environ.get("ANTHROPIC_BASE_URL"),
                timeout=timeout,
                http_client=http_client,
            )
        self.client = client
        self.calibration = Calibration()

    @property
    def model_id(self) -> str:
        return f"anthropic:{self.model}"

    @property
    def profile(self) -> ModelProfile:
        """Window by model name. Its tokenizer is not public, so the renderer's counts are
        approximate: each answer's usage corrects them (`calibration`, the whole prompt
        Anthropic counted against the renderer's count), and a refusal for a prompt too
        long teaches its count and window. In `intent` and `json` mode the tools are
        signatures in the system text (described once); in `tools` mode they are native
        definitions."""
        return ModelProfile.for_id(
            self.model_id,
            output_modes=(self.mode,),
            tools_in_prompt=self.mode != "tools",
            price=self.prices.price(self.model),
            calibration=self.calibration,
        )

    def request_body(self, context: Context) -> tuple[dict[str, Any], dict[str, str]]:
        """The Messages API arguments for `context`, and safe name -> original name."""
        names = tool_name_map(context.tools)
        system = context.system
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": context.max_output_tokens,
            "messages": _messages(context, names),
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.mode != "json" and context.tools:
            body["tools"] = [
                {
                    "name": names[t.name],
                    "description": t.description,
                    "input_schema": t.parameters or {"type": "object", "properties": {}},
                }
                for t in context.tools
            ]
            body["tool_choice"] = {"type": "any"}
        elif self.mode == "intent" and context.output_schema:
            body["tools"] = [_next_step_tool(context)]
            body["tool_choice"] = {"type": "tool", "name": NEXT_STEP}
        elif context.output_schema:
            schema = context.output_schema
            if context.tools_in_prompt:  # the arguments are described in the system text
                schema = intent_envelope(schema)
            system = (
                f"{system}\n\nReply with JSON only, matching this JSON Schema:\n"
                f"{json.dumps(schema)}"
            ).strip()
        if system:
            # The system text (instructions and tools) is the same on every call: cached.
            body["system"] = [{"type": "text", "text": system, "cache_control": self._cache_mark}]
        _mark_cache(body["messages"], context, self._cache_mark)
        return body, {safe: name for name, safe in names.items()}

    async def request(self, context: Context) -> ModelOutput:
        body, original = self.request_body(context)
        send = partial(self.client.messages.create, **body)
        try:
            response, latency = await sdk_request(self._anthropic, self.model, send)
        except InvalidRequest as exc:
            known = self.profile.context_window
            raise (
                overflow(exc, context.input_tokens, self.calibration, self.model_id, known) or exc
            ) from None
        content = getattr(response, "content", None)
        if content is None:
            raise ModelError(f"{self.model}: response has no content", retryable=True)
        texts: list[str] = []
        calls: list[RawToolCall] = []
        steps: list[Any] = []
        for block in content:
            kind = getattr(block, "type", None)
            if kind == "text":
                texts.append(block.text)
            elif kind == "tool_use" and block.name == NEXT_STEP and NEXT_STEP not in original:
                steps.append(block.input)
            elif kind == "tool_use":
                calls.append(
                    RawToolCall(
                        id=block.id,
                        name=original.get(block.name, block.name),
                        arguments=json.dumps(block.input),
                    )
                )
        if steps:
            # The forced next_step's input is the answer (a forced tool is never preceded
            # by text); several are parallel intents, a JSON list for `interpret`.
            texts = [json.dumps(steps[0] if len(steps) == 1 else steps, ensure_ascii=False)]
        usage = response.usage
        # Anthropic counts the cached part of the prompt apart from `input_tokens`; the
        # event's input is the whole prompt, the cache counts a part of it.
        written = (usage.cache_creation_input_tokens or 0) if usage else 0
        read = (usage.cache_read_input_tokens or 0) if usage else 0
        # Of the writes, those that made 1-hour entries (priced at 2x input, not 1.25x).
        by_ttl = usage.cache_creation if usage else None
        written_1h = by_ttl.ephemeral_1h_input_tokens if by_ttl else 0
        prompt = (usage.input_tokens if usage else 0) + written + read
        self.calibration.observe(context.input_tokens, prompt)
        return sdk_output(
            "anthropic",
            response.model or self.model,
            self.prices,
            "".join(texts),
            tuple(calls),
            latency,
            input_tokens=prompt,
            output_tokens=usage.output_tokens if usage else 0,
            cache_write=written,
            cache_read=read,
            cache_write_1h=written_1h,
        )


def _next_step_tool(context: Context) -> dict[str, Any]:
    """The one tool of `intent` mode: its input is the next step as a JSON intent.

    With the tools in the system text its schema is the envelope (the arguments are
    described once, there, and validated by the runtime); otherwise the whole intent union,
    under the object root Anthropic requires.
    """
    if context.tools_in_prompt:
        schema = intent_envelope(context.output_schema)
    else:
        schema = dict(context.output_schema)
        if "oneOf" in schema:
            schema["anyOf"] = schema.pop("oneOf")
        schema.setdefault("type", "object")
    return {
        "name": NEXT_STEP,
        "description": "The next step: one of the tools described in the system prompt.",
        "input_schema": schema,
    }


def _messages(context: Context, names: dict[str, str]) -> list[dict[str, Any]]:
    """Anthropic roles alternate user/assistant; tool results are user content blocks.

    Consecutive user-side messages are merged into one turn.
    """
    out: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})

    for m in context.messages:
        if m.role == "system":
            add("user", [{"type": "text", "text": m.content}])
        elif m.role == "tool":
            add(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": m.tool_call_id or "",
                        "content": m.content,
                    }
                ],
            )
        elif m.role == "assistant":
            blocks: list[dict[str, Any]] = []
            if m.content:
                blocks.append({"type": "text", "text": m.content})
            for i, tc in enumerate(m.tool_calls):
                try:
                    args = json.loads(tc.arguments) if tc.arguments.strip() else {}
                except ValueError:
                    args = {}  # a malformed past call: show the call, not its broken JSON
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": tc.id or f"toolu_{i}",
                        "name": names.get(tc.name, tc.name),
                        "input": args if isinstance(args, dict) else {},
                    }
                )
            add("assistant", blocks or [{"type": "text", "text": ""}])
        else:
            add("user", [{"type": "text", "text": m.content}])
    return out


_EPHEMERAL = {"type": "ephemeral"}


def _mark_cache(messages: list[dict[str, Any]], context: Context, mark: dict[str, str]) -> None:
    """Mark the prompt cache's boundaries in the last message (Anthropic caches a prefix
    up to a block marked `cache_control`, and reads an earlier write only at a block
    boundary: it checks the ~20 boundaries before each mark).

    The text is split where the previous call's write ends (`Context.cached_prefix`), so
    this call reads it, and where its settled prefix ends (`Context.settled_prefix`), which
    is marked: later calls read it even after an older result was cut. The last block is
    marked, so the next call reads this whole prompt when nothing before its end changed.
    With the system block, at most 3 of the 4 marks a request may carry.
    """
    if not messages or not context.messages:
        return
    blocks = messages[-1]["content"]
    last = blocks[-1]
    text = context.messages[-1].content
    if last.get("type") == "text" and last.get("text") == text:
        settled = context.settled_prefix
        cuts = {c for c in (context.cached_prefix, settled) if 0 < c < len(text)}
        ends = [*sorted(cuts), len(text)]
        blocks[-1:] = [
            {"type": "text", "text": text[start:end]}
            | ({"cache_control": mark} if end == settled else {})
            for start, end in zip([0, *ends], ends, strict=False)
        ]
    blocks[-1] = {**blocks[-1], "cache_control": mark}
