"""`THREADLINE_MODEL` -> a `Model`: `provider:model[?options]`, resolved lazily.

    local:smollm2                      the embedded default (threadline[local])
    local:/path/model.gguf             any GGUF file
    openai:gpt-4.1-mini                OpenAI or any OpenAI-compatible server (OPENAI_BASE_URL)
    openai:gpt-4.1-mini?mode=json_schema
    openai:smollm2?server=llama-cpp-python&base_url=http://127.0.0.1:8000/v1
    anthropic:claude-sonnet-4-5        Anthropic (ANTHROPIC_API_KEY)
    scripted:answers.json              a ScriptedModel reading a JSON list of answers
    openai:gpt-4.1-mini,anthropic:claude-sonnet-4-5   a fallback chain, tried in order

Options (after `?`, `&`-separated):

    all remote:  retries=N (attempts in all, default 4), timeout=S (per attempt, default 60),
                 temperature=T
    openai:      server=openai|llama-cpp-python|llama-server|vllm|ollama|lmstudio|generic
                 (default openai, or generic when a base URL is set), base_url=URL (default
                 OPENAI_BASE_URL), mode=tools|json_schema|json_object (default: the server's
                 first mode; docs/models.md has the table), max_tokens=N (cap per call)
    anthropic:   mode=tools|json (default tools)
    local:       grammar=on|off, n_ctx=N, max_tokens=N, temperature=T, timeout=S (per call,
                 default 300, 0 for none; past it the child process is killed)

Remote models are wrapped in `ResilientModel` (retries with backoff, honouring Retry-After)
and share one `CircuitBreaker` per provider (per provider and `base_url` when one is given:
a local server being down says nothing about OpenAI) within one `resolve_model` call.
Nothing is imported or connected until a model of that provider is asked for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl

from ..errors import ConfigError
from .base import Model
from .pricing import PriceTable
from .resilience import CircuitBreaker, FallbackModel, ResilientModel, RetryPolicy

__all__ = ["DEFAULT_MODEL", "parse_spec", "resolve_model"]

DEFAULT_MODEL = "local:smollm2"

_OPTIONS = {
    "openai": {"mode", "server", "base_url", "max_tokens", "retries", "timeout", "temperature"},
    "anthropic": {"mode", "retries", "timeout", "temperature"},
    "local": {"grammar", "n_ctx", "max_tokens", "temperature", "timeout"},
    "scripted": set(),
}


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """`provider:name?a=1&b=2` -> (provider, name, options). Raises ConfigError."""
    provider, sep, rest = spec.strip().partition(":")
    name, _, query = rest.partition("?")
    if not sep or not name or not provider:
        raise ConfigError(f"model {spec!r} must look like provider:model, e.g. local:smollm2")
    if provider not in _OPTIONS:
        raise ConfigError(
            f"unknown model provider {provider!r} in {spec!r}; use local, openai, "
            "anthropic or scripted"
        )
    options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False))
    unknown = set(options) - _OPTIONS[provider]
    if unknown:
        allowed = ", ".join(sorted(_OPTIONS[provider])) or "none"
        raise ConfigError(
            f"unknown option(s) {', '.join(sorted(unknown))} for {provider} in "
            f"{spec!r}; allowed: {allowed}"
        )
    return provider, name, options


def resolve_model(
    spec: str | None,
    *,
    prices: PriceTable | None = None,
    breakers: dict[str, CircuitBreaker] | None = None,
    local_repack: bool = False,
) -> Model:
    """Build the model named by `spec` (empty means the local default).

    Args:
        spec: one spec, or several separated by commas (a fallback chain).
        prices: the price table for remote models' `cost_usd`.
        breakers: circuit breakers by provider to share with other calls (default: fresh).
        local_repack: let llama.cpp repack local models' weights (`Settings.local_repack`).

    Raises:
        ConfigError: a malformed spec, unknown provider or option, missing key or file.
        MissingExtraError: the provider's optional dependency is not installed.
    """
    spec = (spec or "").strip() or DEFAULT_MODEL
    shared = breakers if breakers is not None else {}
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    models = [_one(p, prices, shared, local_repack) for p in parts]
    return models[0] if len(models) == 1 else FallbackModel(models)


def _one(
    spec: str,
    prices: PriceTable | None,
    breakers: dict[str, CircuitBreaker],
    local_repack: bool = False,
) -> Model:
    provider, name, options = parse_spec(spec)
    if provider == "scripted":
        return _scripted(name)
    if provider == "local":
        from .local import LocalModel

        return LocalModel(
            None if name == "smollm2" else name,
            grammar=_flag(options.get("grammar", "on"), "grammar"),
            n_ctx=_number(options, "n_ctx", int, 2048),
            max_output_tokens=_number(options, "max_tokens", int, 384),
            temperature=_number(options, "temperature", float, 0.0),
            timeout=_number(options, "timeout", float, 300.0) or None,
            repack=local_repack,
        )
    timeout = _number(options, "timeout", float, 60.0)
    temperature = options.get("temperature")
    temp = None if temperature is None else _number(options, "temperature", float, 0.0)
    model: Model
    if provider == "openai":
        from .openai import OpenAIModel

        # The backend checks server and mode and raises ConfigError for unknown ones.
        model = OpenAIModel(
            name,
            mode=options.get("mode"),  # type: ignore[arg-type]
            server=options.get("server"),
            base_url=options.get("base_url") or None,
            max_output_tokens=_number(options, "max_tokens", int, 0) or None,
            timeout=timeout,
            temperature=temp,
            prices=prices,
        )
    else:
        from .anthropic import AnthropicModel

        model = AnthropicModel(
            name,
            mode=options.get("mode", "tools"),  # type: ignore[arg-type]
            timeout=timeout,
            temperature=temp,
            prices=prices,
        )
    base_url = options.get("base_url")
    key = f"{provider}@{base_url}" if base_url else provider
    breaker = breakers.setdefault(key, CircuitBreaker(key))
    policy = RetryPolicy(
        max_attempts=_number(options, "retries", int, 4), timeout=timeout + 5
    )  # the SDK's own timeout fires first
    return ResilientModel(model, policy, breaker)


def _scripted(name: str) -> Model:
    from ..testing import ScriptedModel

    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"scripted model file {name!r} does not exist")
    try:
        answers = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"scripted model file {name}: not JSON: {exc}") from None
    if not isinstance(answers, list):
        raise ConfigError(f"scripted model file {name}: expected a JSON list of answers")
    return ScriptedModel(answers, model_id=f"scripted:{path.name}")


def _flag(value: str, name: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "on", "true", "yes"):
        return True
    if lowered in ("0", "off", "false", "no"):
        return False
    raise ConfigError(f"option {name} must be on or off, not {value!r}")


N = TypeVar("N", int, float)


def _number(options: dict[str, str], key: str, kind: Callable[[str], N], default: N) -> N:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"option {key} must be a number, not {raw!r}") from None
    if value < 0:
        raise ConfigError(f"option {key} must not be negative")
    return value
