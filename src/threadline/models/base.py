"""The one-method model interface and the values that cross it.

`Model.request(context) -> ModelOutput` is the whole contract a backend implements. The
context is already rendered (the renderer owns every token); the output is returned
verbatim (text and/or native tool calls). Validating it into an intent is the reducer's
job, not the backend's, so every backend is held to the same schema.

Backends raise `threadline.errors.ModelError` (with `retryable`) when a provider fails; the
runtime turns that into a `model_error` event, never a crashed loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol, runtime_checkable

from ..events import RawToolCall
from .calibration import Calibration
from .pricing import Price

__all__ = [
    "KNOWN_WINDOWS",
    "Context",
    "Message",
    "Model",
    "ModelOutput",
    "ModelProfile",
    "OutputMode",
    "ToolSpec",
    "call_record",
    "intent_envelope",
    "known_encoding",
    "known_window",
]

OutputMode = Literal["text", "tools", "json_schema", "json_object", "json", "intent", "grammar"]
"""How a backend gets an intent out of a model: free text (parsed), native tool calls,
a JSON schema or JSON object response format, Anthropic's JSON prompt, one forced tool
whose input is the JSON intent (Anthropic's `intent`), or a grammar."""

KNOWN_WINDOWS = {
    "gpt-4o": 128_000,
    "gpt-4.1": 1_000_000,
    "gpt-5": 400_000,
    "o3": 200_000,
    "o4": 200_000,
    "claude": 200_000,
    "smollm2": 8_192,
}
"""Context windows by model-name prefix, for models that do not declare their own."""

_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt")
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "text-embedding")


def _model_name(model_id: str) -> str:
    """`provider:org/name` -> `name`, lower case."""
    name = model_id.partition(":")[2] if ":" in model_id else model_id
    return name.rsplit("/", 1)[-1].lower()


def known_window(model_id: str) -> int | None:
    """The window of a model id we know (`provider:name`, by name prefix), else None."""
    name = _model_name(model_id)
    for prefix, size in KNOWN_WINDOWS.items():
        if name.startswith(prefix):
            return size
    return None


def known_encoding(model_id: str) -> str | None:
    """The BPE encoding of an OpenAI model id (`o200k_base`, `cl100k_base`), else None."""
    name = _model_name(model_id)
    if name.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return None


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """What a model declares about itself, as typed data (the renderer sizes the budget
    and counts tokens from it; nothing probes a model's attributes).

    Attributes:
        context_window: tokens of context it accepts (None: unknown; the renderer then
            assumes its default).
        max_output_tokens: the most it answers in one call (None: no cap of its own).
        tokenizer: how to count its tokens exactly: its own function `text -> int`, or a
            BPE encoding name; None: approximately.
        output_modes: how this backend gets an intent out of the model.
        tools_in_prompt: the tool definitions are cheaper as compact signatures in the
            system text than as native JSON definitions: hosted APIs that bill every
            prompt token declare it (`ContextSettings(native_tools=None)`, the default,
            follows it); local and test models keep native definitions.
        tools_text: how the backend writes native tool definitions (`Context.tools`) into
            its request when it has no native tool API: the local model and
            OpenAI-compatible JSON modes describe them as signatures in the system text
            (`models.local.tools_prompt`). The renderer counts this text as the tools'
            cost, so a budget or `threadline profile` counts what is really sent. None:
            they travel as native definitions (counted as chat-completions JSON).
        price: what its tokens cost (USD per million), None when unknown. Budgets in USD
            reserve with it; a model without one cannot run under a USD budget.
        calibration: what the model learned from its provider's answers (a correction of
            the renderer's counts by `usage.prompt_tokens`, a window from a refusal), kept
            on the model object and read by the renderer at each call
            (`models.calibration`); None: nothing is learned.
    """

    context_window: int | None = None
    max_output_tokens: int | None = None
    tokenizer: Callable[[str], int] | str | None = None
    output_modes: frozenset[OutputMode] = frozenset({"text"})
    tools_in_prompt: bool = False
    tools_text: Callable[[Sequence[ToolSpec]], str] | None = None
    price: Price | None = None
    calibration: Calibration | None = None

    @classmethod
    def for_id(
        cls,
        model_id: str,
        *,
        output_modes: Iterable[OutputMode] = ("text",),
        context_window: int | None = None,
        max_output_tokens: int | None = None,
        tokenizer: Callable[[str], int] | str | None = None,
        tools_in_prompt: bool = False,
        tools_text: Callable[[Sequence[ToolSpec]], str] | None = None,
        price: Price | None = None,
        calibration: Calibration | None = None,
    ) -> ModelProfile:
        """A profile from what the model id tells (`known_window`, `known_encoding`);
        explicit values win."""
        return cls(
            context_window=context_window or known_window(model_id),
            max_output_tokens=max_output_tokens,
            tokenizer=tokenizer or known_encoding(model_id),
            output_modes=frozenset(output_modes),
            tools_in_prompt=tools_in_prompt,
            tools_text=tools_text,
            price=price,
            calibration=calibration,
        )

    @classmethod
    def narrowest(cls, profiles: Iterable[ModelProfile]) -> ModelProfile:
        """One profile any of `profiles` can serve (a fallback chain): the smallest known
        window and output cap, the first model's tokenizer, tools text and calibration
        (it corrects that tokenizer's counts), the modes all
        share, tools in the prompt when any of them wants them there (every backend reads
        them there), the highest price of each kind (None if any is unknown: any of them
        may answer)."""
        items = list(profiles)
        if not items:
            return cls()
        windows = [p.context_window for p in items if p.context_window]
        caps = [p.max_output_tokens for p in items if p.max_output_tokens]
        modes = frozenset.intersection(*(p.output_modes for p in items))
        return cls(
            context_window=min(windows) if windows else None,
            max_output_tokens=min(caps) if caps else None,
            tokenizer=items[0].tokenizer,
            output_modes=modes,
            tools_text=items[0].tools_text,
            tools_in_prompt=any(p.tools_in_prompt for p in items),
            price=_highest([p.price for p in items]),
            calibration=items[0].calibration,
        )


def _highest(prices: list[Price | None]) -> Price | None:
    known = [p for p in prices if p is not None]
    if not known or len(known) < len(prices):
        return None
    return Price(max(p.input_per_mtok for p in known), max(p.output_per_mtok for p in known))


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as a model is shown it."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message. `tool_calls` and `tool_call_id` carry native tool-call turns."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[RawToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Context:
    """Exactly what one model call receives.

    Attributes:
        system: the system prompt text.
        messages: the conversation after the system prompt.
        tools: the intents the model may choose, as specs.
        output_schema: JSON Schema of one valid intent (a discriminated union on `intent`);
            backends that constrain output (JSON schema mode, grammars) use it.
        tools_in_prompt: the system text already describes every tool and its arguments
            (the compact signatures; `tools` is then empty). A backend that would send
            `output_schema` as billed prompt text sends `intent_envelope(output_schema)`
            instead: the arguments are described once, and validated by the runtime (an
            invalid one is shown back to the model), not described twice.
        max_output_tokens: the output reservation of the token budget.
        prompt_name / prompt_version / prompt_hash: recorded in the `model_call` event.
        input_tokens: the renderer's own count of the context, when it made one.
        cached_prefix: characters at the start of the last message's content that the
            thread's previous model call was sent verbatim and marked for a cache (the end
            of its message, or its `settled_prefix`; 0: none known). Backends with explicit
            prompt caching split the content there, so this call reads that entry
            (Anthropic: a block boundary); a wrong guess costs a cache miss only.
        settled_prefix: characters at the start of the last message's content that no
            later event changes before the next compaction at this detail level (0: none).
            Backends with explicit prompt caching write a cache entry there as well as at
            the end (Anthropic: `cache_control` on both), so a later call still reads it
            after an older result was cut (threadline.context.prompt_cache).
        model_calls: the thread's model calls before this one (the built-in renderer sets
            it from the thread, the runtime on a custom rendering's context), so a test
            model can answer by the thread's progress, not by its own call count.
    """

    system: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    output_schema: dict[str, Any] = field(default_factory=dict)
    tools_in_prompt: bool = False
    max_output_tokens: int = 1024
    prompt_name: str | None = None
    prompt_version: str | None = None
    prompt_hash: str | None = None
    input_tokens: int | None = None
    cached_prefix: int = 0
    settled_prefix: int = 0
    model_calls: int = 0

    def as_text(self) -> str:
        """The context as plain text, for display (`threadline render`) and test models."""
        parts = [f"[system]\n{self.system}"] if self.system else []
        for m in self.messages:
            head = f"[{m.role}{' ' + m.tool_call_id if m.tool_call_id else ''}]"
            body = m.content
            for tc in m.tool_calls:
                body += f"\n<call {tc.id or ''} {tc.name}>{tc.arguments}</call>"
            parts.append(f"{head}\n{body}")
        return "\n\n".join(parts)

    def at_call(self, model_calls: int) -> Context:
        """This context with `model_calls` set (the runtime's copy of a custom rendering)."""
        values = dict(self.__dict__)
        values["model_calls"] = model_calls
        return Context.of(values)

    @classmethod
    def of(cls, fields: dict[str, Any]) -> Context:
        """A context whose fields are `fields`, given every one by name (as `vars` of a
        context holds them; the dict becomes the context's own). For the renderer, once a
        call: the constructor of a frozen dataclass sets each of the 13 fields through
        `object.__setattr__`, about 20,000 instructions, and this sets the `__dict__` once
        (no slots, on purpose).

        Raises:
            TypeError: `fields` does not name exactly the context's fields.
        """
        if fields.keys() != _CONTEXT_FIELDS:
            raise TypeError(f"a context's fields are {sorted(_CONTEXT_FIELDS)}")
        made = object.__new__(cls)
        object.__setattr__(made, "__dict__", fields)
        return made


_CONTEXT_FIELDS = frozenset(f.name for f in fields(Context))


def intent_envelope(schema: dict[str, Any]) -> dict[str, Any]:
    """The outer shape of an intent union: `{"intent": one of the names, "arguments": {}}`.

    `schema` is `Agent.output_schema()`'s `oneOf` of `{"intent": {"const": name},
    "arguments": ...}` variants; anything else is returned unchanged.
    """
    names: list[Any] = []
    for variant in schema.get("oneOf") or ():
        intent = variant.get("properties", {}).get("intent") if isinstance(variant, dict) else None
        if not isinstance(intent, dict) or "const" not in intent:
            return schema
        names.append(intent["const"])
    if not names:
        return schema
    return {
        "type": "object",
        "properties": {"intent": {"enum": names}, "arguments": {"type": "object"}},
        "required": ["intent", "arguments"],
        "additionalProperties": False,
    }


@dataclass(frozen=True, slots=True)
class ModelOutput:
    """A model's answer, verbatim, with usage.

    Attributes:
        text: the text output (for JSON-mode backends, the JSON intent).
        tool_calls: native tool calls, arguments unparsed.
        model: the pinned model id that answered (recorded in the event).
        input_tokens: every token of the prompt, cached or not.
        cache_write_tokens: of `input_tokens`, those written to the provider's prompt
            cache (Anthropic's `cache_creation_input_tokens`).
        cache_read_tokens: of `input_tokens`, those read from it (Anthropic's
            `cache_read_input_tokens`, OpenAI's `prompt_tokens_details.cached_tokens`).
        cache_write_1h_tokens: of `cache_write_tokens`, those written as 1-hour entries
            (Anthropic's `cache_creation.ephemeral_1h_input_tokens`; the rest live 5
            minutes), priced apart.
        cost_usd: None when the price is unknown.
    """

    text: str = ""
    tool_calls: tuple[RawToolCall, ...] = ()
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float = 0.0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_1h_tokens: int = 0


def call_record(
    out: ModelOutput, context: Context, model_id: str, latency_ms: float, output: str
) -> dict[str, Any]:
    """The fields a model call's event records (`model_call`, a judge's `guard_verdict`),
    by one rule for both: `model` (the model that answered, else the requested
    `model_id`), `prompt_name` / `prompt_version` / `prompt_hash` (what `context` was
    rendered from), `input_tokens`, `output_tokens`, `cache_write_tokens`,
    `cache_read_tokens`, `cache_write_1h_tokens`, `cost_usd`, `latency_ms` (the
    provider's, else `latency_ms` as measured around the call, to three decimals) and
    `output` (the answer's text as stored). A new dict: callers add their own fields; a
    `guard_verdict` keeps those it has (no cache counts: `guards._JUDGE_FIELDS`)."""
    return {
        "model": out.model or model_id,
        "prompt_name": context.prompt_name,
        "prompt_version": context.prompt_version,
        "prompt_hash": context.prompt_hash,
        "input_tokens": out.input_tokens,
        "output_tokens": out.output_tokens,
        "cache_write_tokens": out.cache_write_tokens,
        "cache_read_tokens": out.cache_read_tokens,
        "cache_write_1h_tokens": out.cache_write_1h_tokens,
        "cost_usd": out.cost_usd,
        "latency_ms": round(out.latency_ms or latency_ms, 3),
        "output": output,
    }


@runtime_checkable
class Model(Protocol):
    """Anything that turns a rendered context into a `ModelOutput`."""

    @property
    def model_id(self) -> str:
        """The pinned id recorded in every `model_call` event."""
        ...

    @property
    def profile(self) -> ModelProfile:
        """What the model declares: window, output cap, tokenizer, output modes."""
        ...

    async def request(self, context: Context) -> ModelOutput:
        """Answer one context. Raises `ModelError` on provider failure."""
        ...
