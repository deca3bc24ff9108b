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
                 first mode; docs/models.md has the table), max_tokens=N (cap per call),
                 n_ctx=N (the window the server serves; default: the server kind's own
                 default, else the model name's known window)
    anthropic:   mode=intent|tools|json (default intent), cache_ttl=5m|1h (how long the
                 prompt cache keeps a call's writes; default 5m)
    local:       grammar=on|off, n_ctx=N, max_tokens=N, temperature=T, timeout=S (per call,
                 default 300, 0 for none; past it the child process is killed)

Remote models are wrapped in `ResilientModel` (retries with backoff, honouring Retry-After)
and share one `CircuitBreaker` per provider (per provider and `base_url` when one is given:
a local server being down says nothing about OpenAI) within one `resolve_model` call.
Nothing is imported or connected until a model of that provider is asked for.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl

from ..errors import ConfigError
from .base import Model
from .pricing import PriceTable
from .resilience import CircuitBreaker, FallbackModel, ResilientModel, RetryPolicy

__all__ = ["DEFAULT_MODEL", "PROVIDERS", "BuildContext", "Provider", "parse_spec", "resolve_model"]

DEFAULT_MODEL = "local:smollm2"

_REMOTE = frozenset({"retries", "timeout", "temperature"})
"""Options every remote provider accepts (its retry policy, timeout and temperature)."""


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What building a model may use beside its spec."""

    prices: PriceTable | None = None
    local_repack: bool = False


@dataclass(frozen=True, slots=True)
class Provider:
    """One model provider: the spec prefix, the options it accepts and how to build it.

    Attributes:
        name: the prefix of its specs (`openai` in `openai:gpt-4.1-mini`).
        options: the `?key=value` options its specs accept.
        build: `(model name, options, context) -> Model`; imports its SDK lazily.
        remote: wrap the model in a `ResilientModel` (retries, timeout, a circuit breaker
            per provider and base URL); such providers also accept `retries`, `timeout`
            and `temperature`.
    """

    name: str
    options: frozenset[str]
    build: Callable[[str, dict[str, str], BuildContext], Model]
    remote: bool = False

    @property
    def allowed(self) -> frozenset[str]:
        return self.options | _REMOTE if self.remote else self.options


def _local(name: str, options: dict[str, str], ctx: BuildContext) -> Model:
    from .local import LocalModel

    return LocalModel(
        None if name == "smollm2" else name,
        grammar=_flag(options.get("grammar", "on"), "grammar"),
        n_ctx=_number(options, "n_ctx", int, 2048),
        max_output_tokens=_number(options, "max_tokens", int, 384),
        temperature=_number(options, "temperature", float, 0.0),
        timeout=_number(options, "timeout", float, 300.0) or None,
        repack=ctx.local_repack,
    )


def _temperature(options: dict[str, str]) -> float | None:
    if options.get("temperature") is None:
        return None
    return _number(options, "temperature", float, 0.0)


def _openai(name: str, options: dict[str, str], ctx: BuildContext) -> Model:
    from .openai import OpenAIModel

    # The backend checks server and mode and raises ConfigError for unknown ones.
    return OpenAIModel(
        name,
        mode=options.get("mode"),  # type: ignore[arg-type]
        server=options.get("server"),
        base_url=options.get("base_url") or None,
        max_output_tokens=_number(options, "max_tokens", int, 0) or None,
        context_window=_number(options, "n_ctx", int, 0) or None,
        timeout=_number(options, "timeout", float, 60.0),
        temperature=_temperature(options),
        prices=ctx.prices,
    )


def _anthropic(name: str, options: dict[str, str], ctx: BuildContext) -> Model:
    from .anthropic import AnthropicModel

    return AnthropicModel(
        name,
        mode=options.get("mode", "intent"),  # type: ignore[arg-type]
        cache_ttl=options.get("cache_ttl", "5m"),  # type: ignore[arg-type]
        timeout=_number(options, "timeout", float, 60.0),
        temperature=_temperature(options),
        prices=ctx.prices,
    )


def _scripted_provider(name: str, options: dict[str, str], ctx: BuildContext) -> Model:
    return _scripted(name)


PROVIDERS: Mapping[str, Provider] = {
    p.name: p
    for p in (
        Provider(
            "local",
            frozenset({"grammar", "n_ctx", "max_tokens", "temperature", "timeout"}),
            _local,
        ),
        Provider(
            "openai",
            frozenset({"mode", "server", "base_url", "max_tokens", "n_ctx"}),
            _openai,
            remote=True,
        ),
        Provider("anthropic", frozenset({"mode", "cache_ttl"}), _anthropic, remote=True),
        Provider("scripted", frozenset(), _scripted_provider),
    )
}
"""The built-in providers, by spec prefix. Pass `providers=` to `resolve_model` to add
your own (a mapping built from this one)."""


def parse_spec(
    spec: str, providers: Mapping[str, Provider] = PROVIDERS
) -> tuple[str, str, dict[str, str]]:
    """`provider:name?a=1&b=2` -> (provider, name, options).

    Raises:
        ConfigError: the spec is malformed, names no provider of the table, or an option
            that provider does not accept.
    """
    provider, sep, rest = spec.strip().partition(":")
    name, _, query = rest.partition("?")
    if not sep or not name or not provider:
        raise ConfigError(f"model {spec!r} must look like provider:model, e.g. local:smollm2")
    entry = providers.get(provider)
    if entry is None:
        known = ", ".join(sorted(providers))
        raise ConfigError(f"unknown model provider {provider!r} in {spec!r}; use one of: {known}")
    options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False))
    unknown = set(options) - entry.allowed
    if unknown:
        allowed = ", ".join(sorted(entry.allowed)) or "none"
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
    providers: Mapping[str, Provider] = PROVIDERS,
) -> Model:
    """Build the model named by `spec` (empty means the local default).

    Args:
        spec: one spec, or several separated by commas (a fallback chain).
        prices: the price table for remote models' `cost_usd`.
        breakers: circuit breakers by provider to share with other calls (default: fresh).
        local_repack: let llama.cpp repack local models' weights (`Settings.local_repack`).
        providers: the provider table (default: the built-in `PROVIDERS`).

    Raises:
        ConfigError: a malformed spec, unknown provider or option, missing key or file.
        MissingExtraError: the provider's optional dependency is not installed.
    """
    spec = (spec or "").strip() or DEFAULT_MODEL
    shared = breakers if breakers is not None else {}
    ctx = BuildContext(prices, local_repack)
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    models = [_one(p, ctx, shared, providers) for p in parts]
    return models[0] if len(models) == 1 else FallbackModel(models)


def _one(
    spec: str,
    ctx: BuildContext,
    breakers: dict[str, CircuitBreaker],
    providers: Mapping[str, Provider],
) -> Model:
    provider, name, options = parse_spec(spec, providers)
    entry = providers[provider]
    model = entry.build(name, options, ctx)
    if not entry.remote:
        return model
    timeout = _number(options, "timeout", float, 60.0)
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
    # Indexed by the thread's model calls too: a thread continued in another process (`run`,
    # then `respond`) gets its next answer, not answer 0 again (docs/models.md).
    return ScriptedModel(answers, model_id=f"scripted:{path.name}", follow_thread=True)


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
