"""OpenAI and every server speaking its chat-completions protocol (vLLM, llama.cpp server,
Ollama, LM Studio), on the official `openai` SDK.

Two ways to get a typed intent out, chosen per model (`mode`):

* `json_schema`: `response_format={"type": "json_schema", ...}` built from
  `Context.output_schema`; the answer is the JSON intent as text.
* `tools`: native tool calling, one function per `Context.tools`, `tool_choice="required"`;
  the answer is the provider's tool calls.

Either way the answer is returned verbatim; `threadline.reducer.interpret` validates it.
The SDK's own retries are off (`max_retries=0`): `ResilientModel` retries and counts the
attempts. Every failure (timeout, connection error, HTTP error, malformed body) is raised
as `ModelError` with `retryable` and `status` set.

Tool names outside OpenAI's `^[a-zA-Z0-9_-]{1,64}$` (BFCL's `math.factorial`) are sent
sanitised and mapped back, so callers always see their own names.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError, MissingExtraError, ModelError
from ..events import RawToolCall
from .base import Context, Message, ModelOutput, ToolSpec
from .pricing import PriceTable
from .resilience import is_retryable_status, parse_retry_after

if TYPE_CHECKING:
    import openai

__all__ = ["OpenAIModel", "json_schema_response_format", "tool_name_map"]

Mode = Literal["json_schema", "tools"]
_SAFE_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def tool_name_map(tools: tuple[ToolSpec, ...]) -> dict[str, str]:
    """Original tool name -> a provider-safe, unique name (identity when already safe)."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for spec in tools:
        safe = (
            spec.name
            if _SAFE_NAME.match(spec.name)
            else re.sub(r"[^a-zA-Z0-9_-]", "_", spec.name)[:64] or "tool"
        )
        base, n = safe, 1
        while safe in used:
            n += 1
            safe = f"{base[:60]}_{n}"
        used.add(safe)
        out[spec.name] = safe
    return out


def json_schema_response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """`response_format` for an intent schema.

    OpenAI wants an object at the root and rejects a bare `oneOf` there, so the union is
    expressed as `anyOf` under `"type": "object"` (equivalent for a discriminated union).
    Non-strict: strict mode would force every optional argument to be required.
    """
    if not schema:
        return {"type": "json_object"}
    root = dict(schema)
    if "oneOf" in root:
        root["anyOf"] = root.pop("oneOf")
    root.setdefault("type", "object")
    return {
        "type": "json_schema",
        "json_schema": {"name": "intent", "schema": root, "strict": False},
    }


class OpenAIModel:
    """A chat-completions model.

    Args:
        model: the model id sent to the API (`gpt-4.1-mini`, or whatever a compatible server
            serves). The id the API answers with (a dated snapshot) is recorded.
        mode: `json_schema` or `tools` (see the module docstring).
        base_url: defaults to `OPENAI_BASE_URL`, then OpenAI itself.
        api_key: defaults to `OPENAI_API_KEY`; optional when a base URL is set (local servers).
        timeout: seconds the SDK waits for one response.
        temperature: sent only when given (reasoning models reject it).
        prices: the price table for `cost_usd`.
        client: an `openai.AsyncOpenAI` to use instead (tests, custom transports).
        http_client: an `httpx2.AsyncClient` for the SDK (recorded-exchange tests).

    Raises:
        MissingExtraError: `openai` is not installed.
        ConfigError: no API key and no base URL.
    """

    def __init__(
        self,
        model: str,
        *,
        mode: Mode = "tools",
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        temperature: float | None = None,
        prices: PriceTable | None = None,
        client: openai.AsyncOpenAI | None = None,
        http_client: Any = None,
    ) -> None:
        if mode not in ("json_schema", "tools"):
            raise ConfigError(f"openai mode must be json_schema or tools, not {mode!r}")
        try:
            import openai
        except ImportError:
            raise MissingExtraError("openai", "openai") from None
        self.model = model
        self.mode: Mode = mode
        self.temperature = temperature
        self.prices = prices or PriceTable()
        self._openai = openai
        if client is None:
            base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
            api_key = api_key or os.environ.get("OPENAI_API_KEY")
            if not api_key:
                if base_url is None:
                    raise ConfigError(
                        "OPENAI_API_KEY is not set; export it, or set OPENAI_BASE_URL to an "
                        "OpenAI-compatible server that needs no key"
                    )
                api_key = "not-needed"  # local servers ignore it, the SDK insists on one
            client = openai.AsyncOpenAI(
                api_key=api_key,
                base_url=base_url,
                timeout=timeout,
                max_retries=0,
                http_client=http_client,
            )
        self.client = client
        # api.openai.com wants max_completion_tokens; older compatible servers know only
        # max_tokens.
        self._max_tokens_param = (
            "max_completion_tokens" if "api.openai.com" in str(client.base_url) else "max_tokens"
        )

    @property
    def model_id(self) -> str:
        return f"openai:{self.model}"

    def request_body(self, context: Context) -> tuple[dict[str, Any], dict[str, str]]:
        """The chat-completions arguments for `context`, and safe name -> original name."""
        names = tool_name_map(context.tools)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": _messages(context, names),
            self._max_tokens_param: context.max_output_tokens,
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.mode == "tools" and context.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": names[t.name],
                        "description": t.description,
                        "parameters": t.parameters or {"type": "object", "properties": {}},
                    },
                }
                for t in context.tools
            ]
            body["tool_choice"] = "required"
        else:
            body["response_format"] = json_schema_response_format(context.output_schema)
        return body, {safe: name for name, safe in names.items()}

    async def request(self, context: Context) -> ModelOutput:
        body, original = self.request_body(context)
        started = time.perf_counter()
        try:
            response = await self.client.chat.completions.create(**body)
        except self._openai.APIError as exc:
            raise _model_error(self._openai, exc, self.model) from exc
        except Exception as exc:  # e.g. a body that is not JSON at all
            raise ModelError(
                f"{self.model}: unreadable response ({type(exc).__name__}: {exc})",
                retryable=True,
            ) from exc
        latency = (time.perf_counter() - started) * 1000
        choices = getattr(response, "choices", None)
        if not choices:
            raise ModelError(f"{self.model}: response has no choices", retryable=True)
        message = choices[0].message
        calls = tuple(
            RawToolCall(
                id=tc.id,
                name=original.get(tc.function.name, tc.function.name),
                arguments=tc.function.arguments or "",
            )
            for tc in (message.tool_calls or ())
            if getattr(tc, "function", None) is not None
        )
        text = message.content or ""
        if not text and not calls and getattr(message, "refusal", None):
            text = str(message.refusal)
        usage = response.usage
        input_tokens = usage.prompt_tokens if usage else 0
        output_tokens = usage.completion_tokens if usage else 0
        answered_by = response.model or self.model
        return ModelOutput(
            text=text,
            tool_calls=calls,
            model=f"openai:{answered_by}",
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=self.prices.cost(answered_by, input_tokens, output_tokens),
            latency_ms=round(latency, 3),
        )


def _messages(context: Context, names: dict[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if context.system:
        out.append({"role": "system", "content": context.system})
    for m in context.messages:
        out.append(_message(m, names))
    return out


def _message(m: Message, names: dict[str, str]) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content}
    item: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.role == "assistant" and m.tool_calls:
        item["tool_calls"] = [
            {
                "id": tc.id or f"call_{i}",
                "type": "function",
                "function": {"name": names.get(tc.name, tc.name), "arguments": tc.arguments},
            }
            for i, tc in enumerate(m.tool_calls)
        ]
        item["content"] = m.content or None
    return item


def _model_error(openai: Any, exc: Exception, model: str) -> ModelError:
    """Map an SDK exception to a `ModelError` that says whether a retry could help."""
    if isinstance(exc, openai.APITimeoutError):
        return ModelError(f"{model}: request timed out", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return ModelError(f"{model}: connection failed: {exc}", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        return ModelError(
            f"{model}: HTTP {status}: {_short(exc)}",
            retryable=is_retryable_status(status),
            status=status,
            retry_after=parse_retry_after(exc.response.headers),
        )
    # APIResponseValidationError and friends: a 2xx whose body is not what the API promises.
    return ModelError(f"{model}: malformed response: {_short(exc)}", retryable=True)


def _short(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        return json.dumps(body)[:300]
    return str(exc)[:300]
