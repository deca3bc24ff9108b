"""THREADLINE_MODEL specs -> models."""

from __future__ import annotations

import pytest

from threadline.errors import ConfigError
from threadline.models.registry import parse_spec, resolve_model
from threadline.models.resilience import FallbackModel, ResilientModel


def test_parse_spec_options() -> None:
    assert parse_spec("openai:gpt-4.1-mini?mode=json_schema&retries=2") == (
        "openai",
        "gpt-4.1-mini",
        {"mode": "json_schema", "retries": "2"},
    )
    assert parse_spec("local:/m/x.gguf") == ("local", "/m/x.gguf", {})


@pytest.mark.parametrize(
    "spec, message",
    [
        ("gpt-4", "provider:model"),
        ("mystery:x", "unknown model provider"),
        ("openai:gpt-4.1?colour=red", "unknown option"),
        ("openai:gpt-4.1?mode=yaml", "mode"),
        ("anthropic:claude-sonnet-4-6?cache_ttl=1d", "cache_ttl"),
        ("openai:gpt-4.1?retries=many", "must be a number"),
        ("local:smollm2?grammar=maybe", "on or off"),
        ("local:/no/such/model.gguf", "does not exist"),
        ("scripted:/no/such.json", "does not exist"),
    ],
)
def test_bad_specs_are_config_errors(spec: str, message: str, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with pytest.raises(ConfigError, match=message):
        resolve_model(spec)


def test_remote_models_are_wrapped_and_share_a_breaker_per_provider(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    model = resolve_model("openai:gpt-4.1-mini?retries=2,openai:gpt-4.1,anthropic:claude-x")
    assert isinstance(model, FallbackModel)
    first, second, third = model.models
    assert isinstance(first, ResilientModel) and first.policy.max_attempts == 2
    assert first.breaker is second.breaker and first.breaker is not third.breaker
    assert model.model_id == "openai:gpt-4.1-mini,openai:gpt-4.1,anthropic:claude-x"


def test_scripted_is_kept(tmp_path) -> None:
    path = tmp_path / "answers.json"
    path.write_text('[{"intent": "done_for_now", "arguments": {"message": "hi"}}]')
    assert resolve_model(f"scripted:{path}").model_id == "scripted:answers.json"


def test_no_configuration_means_the_local_model() -> None:
    pytest.importorskip("llama_cpp")
    model = resolve_model(None)
    assert model.model_id == "local:SmolLM2-135M-Instruct.Q4_1.gguf"
    off = resolve_model("local:smollm2?grammar=off&max_tokens=64")
    assert off.model_id.endswith("?grammar=off")


def test_providers_come_from_one_table_and_a_table_can_add_one() -> None:
    from threadline.models.registry import PROVIDERS, Provider
    from threadline.testing import ScriptedModel

    assert set(PROVIDERS) == {"local", "openai", "anthropic", "scripted"}
    with pytest.raises(ConfigError, match="use one of: anthropic, local, openai, scripted"):
        resolve_model("mystery:x")

    def echo(name: str, options: dict[str, str], ctx: object) -> ScriptedModel:
        return ScriptedModel([], model_id=f"echo:{name}:{options.get('tone', '')}")

    table = {**PROVIDERS, "echo": Provider("echo", frozenset({"tone"}), echo)}
    assert resolve_model("echo:x?tone=dry", providers=table).model_id == "echo:x:dry"
    with pytest.raises(ConfigError, match="allowed: tone"):
        resolve_model("echo:x?colour=red", providers=table)
    remote = {**PROVIDERS, "echo": Provider("echo", frozenset(), echo, remote=True)}
    wrapped = resolve_model("echo:x?retries=2", providers=remote)
    assert isinstance(wrapped, ResilientModel) and wrapped.policy.max_attempts == 2


def test_wrappers_pass_the_profile_through(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    one = resolve_model("openai:gpt-4.1-mini?mode=json_schema&max_tokens=500")
    assert one.profile.context_window == 1_000_000
    assert one.profile.max_output_tokens == 500
    assert one.profile.tokenizer == "o200k_base"
    assert one.profile.output_modes == {"json_schema"}
    chain = resolve_model("openai:gpt-4.1-mini,anthropic:claude-sonnet-4-5")
    assert chain.profile.context_window == 200_000  # what every model of the chain takes


def test_anthropic_cache_ttl_is_an_option(monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    model = resolve_model("anthropic:claude-sonnet-4-6?cache_ttl=1h")
    assert isinstance(model, ResilientModel) and model.model.cache_ttl == "1h"  # type: ignore[attr-defined]
    default = resolve_model("anthropic:claude-sonnet-4-6")
    assert isinstance(default, ResilientModel) and default.model.cache_ttl == "5m"  # type: ignore[attr-defined]
