"""OpenAI and every server speaking its chat-completions protocol (vLLM, llama.cpp's
`llama-server`, llama-cpp-python's server, Ollama, LM Studio), on the official `openai` SDK.

Three ways to get a typed intent out (`mode`), each sent the way the configured server kind
accepts it (`server`, a declared `OpenAIServer` profile, never probed per call):

* `json_schema`: `response_format={"type": "json_schema", ...}` built from
  `Context.output_schema`; the answer is the JSON intent as text.
* `json_object`: the same schema as llama.cpp's servers take it,
  `response_format={"type": "json_object", "schema": ...}` (vLLM: its `structured_outputs`
  field); the answer is the JSON intent as text.
* `tools`: native tool calling, one function per `Context.tools`, with the `tool_choice`
  the server supports (`required` where it forces a call, `auto` where `required` is
  refused, nothing where the field is ignored); the answer is the provider's tool calls.

In the JSON modes the tools are also described in the system message (as for the embedded
model): the schema alone names them but does not say what they do. Whatever the mode, the
answer is returned verbatim; `threadline.reducer.interpret` validates it.

The SDK's own retries are off (`max_retries=0`): `ResilientModel` retries and counts the
attempts. Every failure (timeout, connection error, HTTP error, malformed body) is raised as
`ModelError` with `retryable` and `status` set; an HTTP error saying the request itself is
invalid is raised as `InvalidRequest` (never retried; the thread escalates with the
server's message).

Tool names outside OpenAI's `^[a-zA-Z0-9_-]{1,64}$` (BFCL's `math.factorial`) are sent
sanitised and mapped back, so callers always see their own names.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError, ContextOverflow, InvalidRequest, MissingExtraError, ModelError
from ..events import RawToolCall
from .base import Context, Message, ModelOutput, ModelProfile, ToolSpec
from .calibration import Calibration, overflow
from .local import tools_prompt  # pure text; llama.cpp itself is imported lazily there
from .pricing import PriceTable
from .resilience import sdk_api_key, sdk_client, sdk_output, sdk_request
from .server_tokens import ServerTokenizer

if TYPE_CHECKING:
    import openai

__all__ = [
    "MODES",
    "SERVERS",
    "OpenAIModel",
    "OpenAIServer",
    "json_object_response_format",
    "json_schema_response_format",
    "tool_name_map",
]

Mode = Literal["json_schema", "json_object", "tools"]
MODES: tuple[Mode, ...] = ("json_schema", "json_object", "tools")
_SAFE_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

log = logging.getLogger("threadline.models.openai")

_NO_KEY_HINT = "export it, or set OPENAI_BASE_URL to an OpenAI-compatible server that needs no key"


@dataclass(frozen=True, slots=True)
class OpenAIServer:
    """What one kind of OpenAI-compatible server accepts: declared, never guessed per call.

    Attributes:
        name: the `server=` value in a model spec.
        modes: the output modes the server honours; the first is the default.
        tool_choice: what `tools` mode sends to force a tool call: `required`, `auto` where
            `required` is refused, or None where the field is ignored (then it is not sent).
        json_object_schema: where `json_object` mode puts the intent schema:
            `response_format` (`{"type": "json_object", "schema": ...}`) or
            `structured_outputs` (vLLM's extra field `{"structured_outputs": {"json": ...}}`).
        bills_prompt: a hosted API billing every prompt token (the schema of a response
            format included). Its models in a JSON mode declare `tools_in_prompt`: the
            tools go once, as signatures in the system text, and the response format is
            JSON mode (`{"type": "json_object"}`), not a schema repeating them. Local
            servers turn the full schema into a grammar for free.
        n_ctx: the context window the server serves when the spec does not say
            (`n_ctx=N`): its own default, whatever window the model was trained for.
            None: unknown (the model name's known window, else the renderer's default).
        count_path: the server's token-count endpoint, from its root
            (`models.server_tokens`); None: it has none (counts by the model name's BPE
            encoding, else approximately).
    """

    name: str
    modes: tuple[Mode, ...]
    tool_choice: Literal["required", "auto"] | None = "required"
    json_object_schema: Literal["response_format", "structured_outputs"] = "response_format"
    bills_prompt: bool = False
    n_ctx: int | None = None
    count_path: str | None = None


SERVERS: dict[str, OpenAIServer] = {
    s.name: s
    for s in (
        # OpenAI's own API: JSON schema and strict tool choice; its json_object takes no
        # schema. It bills every prompt token: by default the tools are described once as
        # signatures and the answer is the JSON intent (`tools` mode sends them natively).
        OpenAIServer("openai", ("json_schema", "tools"), bills_prompt=True),
        # llama-cpp-python (`python -m llama_cpp.server`): response_format must be text or
        # json_object (json_schema is refused); tools need `--chat_format
        # chatml-function-calling`, whose handler asserts on tool_choice="required". It
        # serves 2,048 tokens unless started with another `--n_ctx` (its settings'
        # default), and counts with the served model's tokenizer at /extras/tokenize/count.
        OpenAIServer(
            "llama-cpp-python",
            ("json_object", "tools"),
            tool_choice="auto",
            n_ctx=2048,
            count_path="/extras/tokenize/count",
        ),
        # llama.cpp's `llama-server`: json_object+schema and json_schema; tools with --jinja.
        OpenAIServer("llama-server", ("json_schema", "json_object", "tools")),
        # vLLM: json_schema; schema-constrained JSON through structured_outputs (guided_json
        # before v0.12); tool_choice="required" since v0.8.3.
        OpenAIServer(
            "vllm",
            ("json_schema", "json_object", "tools"),
            json_object_schema="structured_outputs",
        ),
        # Ollama's /v1: json_schema becomes its `format` schema; json_object is plain JSON
        # without the schema (so not offered); tool_choice is not a field it reads.
        OpenAIServer("ollama", ("json_schema", "tools"), tool_choice=None),
        # LM Studio: json_schema is documented; json_object is not accepted.
        OpenAIServer("lmstudio", ("json_schema", "tools"), tool_choice="auto"),
        # Any other compatible server: everything is allowed, the OpenAI defaults apply.
        OpenAIServer("generic", ("tools", "json_schema", "json_object")),
    )
}
"""The server kinds `server=` accepts (docs/models.md has the table with what was verified)."""


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


def json_object_response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """`response_format` in the form llama.cpp's servers take a schema:
    `{"type": "json_object", "schema": ...}` (plain JSON mode when there is no schema)."""
    if not schema:
        return {"type": "json_object"}
    return {"type": "json_object", "schema": schema}


class OpenAIModel:
    """A chat-completions model.

    Args:
        model: the model id sent to the API (`gpt-4.1-mini`, or whatever a compatible server
            serves). The id the API answers with (a dated snapshot) is recorded.
        mode: `json_schema`, `json_object` or `tools` (see the module docstring); default:
            the server kind's first mode.
        server: the kind of server (a key of `SERVERS`); default `openai` for OpenAI's API,
            `generic` for any other base URL.
        base_url: defaults to `OPENAI_BASE_URL`, then OpenAI itself.
        api_key: defaults to `OPENAI_API_KEY`; optional when a base URL is set (local servers).
        timeout: seconds the SDK waits for one response.
        temperature: sent only when given (reasoning models reject it).
        max_output_tokens: a cap on the tokens asked for per call, below the context's
            output reservation (small local models that would otherwise run long).
        context_window: the window the server serves (a local server's `--n_ctx`);
            default: the server kind's default (`OpenAIServer.n_ctx`), else the model
            name's known window.
        prices: the price table for `cost_usd`.
        client: an `openai.AsyncOpenAI` to use instead (tests, custom transports).
        http_client: an `httpx2.AsyncClient` for the SDK (recorded-exchange tests).

    Raises:
        MissingExtraError: `openai` is not installed.
        ConfigError: no API key and no base URL; an unknown server kind; a mode the server
            kind does not support.
    """

    def __init__(
        self,
        model: str,
        *,
        mode: Mode | None = None,
        server: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
        context_window: int | None = None,
        prices: PriceTable | None = None,
        client: openai.AsyncOpenAI | None = None,
        http_client: Any = None,
    ) -> None:
        if client is None:
            base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        elif base_url is None:
            base_url = str(client.base_url)
        self.server = _server(server, base_url)
        self.mode: Mode = _mode(mode, self.server)
        try:
            import openai
        except ImportError:
            raise MissingExtraError("openai", "openai") from None
        self.model = model
        self.temperature = temperature
        self.max_output_tokens = max_output_tokens
        self.context_window = context_window or self.server.n_ctx
        self.prices = prices or PriceTable()
        self._openai = openai
        if client is None:
            # A compatible server at a base URL may need no key (local servers ignore it).
            hint = None if base_url else _NO_KEY_HINT
            key = sdk_api_key(api_key, "OPENAI_API_KEY", hint)
            client = sdk_client(
                openai.AsyncOpenAI, key, base_url, timeout=timeout, http_client=http_client
            )
        self.client = client
        self.calibration = Calibration()
        self.count_tokens = _server_tokenizer(self.server, str(client.base_url), model, api_key)
        # api.openai.com wants max_completion_tokens; older compatible servers know only
        # max_tokens.
        self._max_tokens_param = (
            "max_completion_tokens" if "api.openai.com" in str(client.base_url) else "max_tokens"
        )

    @property
    def model_id(self) -> str:
        return f"openai:{self.model}"

    @property
    def profile(self) -> ModelProfile:
        """Its window (the server's, else by model name), tokenizer (the server's, else
        by model name), output cap and mode. Outside `tools` mode the tools are described
        as signatures in the system text (`tools_prompt`, as `request_body` sends them)."""
        return ModelProfile.for_id(
            self.model_id,
            output_modes=(self.mode,),
            context_window=self.context_window,
            max_output_tokens=self.max_output_tokens,
            tokenizer=self.count_tokens,
            tools_in_prompt=self.server.bills_prompt and self.mode != "tools",
            tools_text=None if self.mode == "tools" else tools_prompt,
            price=self.prices.price(self.model),
            calibration=self.calibration,
        )

    def request_body(self, context: Context) -> tuple[dict[str, Any], dict[str, str]]:
        """The chat-completions arguments for `context`, and safe name -> original name."""
        names = tool_name_map(context.tools)
        native = self.mode == "tools" and bool(context.tools)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": _messages(context, names, describe_tools=not native),
            self._max_tokens_param: min(
                context.max_output_tokens, self.max_output_tokens or context.max_output_tokens
            ),
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if native:
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
            if self.server.tool_choice is not None:
                body["tool_choice"] = self.server.tool_choice
        elif self._json_mode() == "json_object":
            schema = context.output_schema
            if self.server.json_object_schema == "structured_outputs" and schema:
                body["extra_body"] = {"structured_outputs": {"json": schema}}
            else:
                body["response_format"] = json_object_response_format(schema)
        elif context.tools_in_prompt and self.server.bills_prompt:
            # The system text describes every intent and its arguments once, and asks for
            # one JSON object: JSON mode guarantees the object, the runtime validates it
            # (an invalid one is shown back). A schema would bill the tools a second time.
            body["response_format"] = {"type": "json_object"}
        else:
            body["response_format"] = json_schema_response_format(context.output_schema)
        return body, {safe: name for name, safe in names.items()}

    def _json_mode(self) -> Mode:
        """The JSON mode used when no native tool call is made (`tools` mode without tools)."""
        if self.mode != "tools":
            return self.mode
        return "json_schema" if "json_schema" in self.server.modes else "json_object"

    async def request(self, context: Context) -> ModelOutput:
        body, original = self.request_body(context)
        send = partial(self.client.chat.completions.create, **body)
        try:
            response, latency = await sdk_request(self._openai, self.model, send)
        except InvalidRequest as exc:
            raise self._overflow(exc, context) or exc from None
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
        details = usage.prompt_tokens_details if usage else None
        if usage is not None and usage.prompt_tokens:
            self.calibration.observe(context.input_tokens, usage.prompt_tokens)
        return sdk_output(
            "openai",
            response.model or self.model,
            self.prices,
            text,
            calls,
            latency,
            input_tokens=usage.prompt_tokens if usage else 0,  # cached tokens included
            output_tokens=usage.completion_tokens if usage else 0,
            cache_write=(details.cache_write_tokens or 0) if details else 0,
            cache_read=(details.cached_tokens or 0) if details else 0,
        )

    def _overflow(self, exc: InvalidRequest, context: Context) -> ContextOverflow | None:
        """`exc` as a `ContextOverflow` when it is a refusal for exceeding the window that
        says the window (`calibration.overflow`, which keeps what it taught); a window lower
        than the one assumed becomes `context_window`, so the profile says it."""
        found = overflow(
            exc, context.input_tokens, self.calibration, self.model_id, self.context_window
        )
        if found is not None and found.window < (self.context_window or found.window + 1):
            self.context_window = found.window
        return found


def _server_tokenizer(
    server: OpenAIServer, base_url: str, model: str, api_key: str | None
) -> ServerTokenizer | None:
    """The server's own tokenizer, when its kind has a count endpoint (at the root of the
    URL, beside `/v1`)."""
    if server.count_path is None:
        return None
    root = base_url.rstrip("/").removesuffix("/v1")
    key = api_key or os.environ.get("OPENAI_API_KEY")
    return ServerTokenizer(f"{root}{server.count_path}", model, key)


def _server(name: str | None, base_url: str | None) -> OpenAIServer:
    if name is None:
        name = "openai" if base_url is None or "api.openai.com" in base_url else "generic"
    try:
        return SERVERS[name]
    except KeyError:
        known = ", ".join(SERVERS)
        raise ConfigError(
            f"unknown OpenAI-compatible server {name!r}; use one of {known}"
        ) from None


def _mode(mode: str | None, server: OpenAIServer) -> Mode:
    if mode is None:
        return server.modes[0]
    for known in server.modes:
        if known == mode:
            return known
    allowed = ", ".join(server.modes)
    if mode not in MODES:
        raise ConfigError(f"openai mode must be one of {', '.join(MODES)}, not {mode!r}")
    raise ConfigError(f"server {server.name} does not support mode {mode}; use {allowed}")


def _messages(
    context: Context, names: dict[str, str], *, describe_tools: bool = False
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = context.system
    if describe_tools and context.tools:
        system = f"{system}\n\n{tools_prompt(context.tools)}".strip()
    if system:
        out.append({"role": "system", "content": system})
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
