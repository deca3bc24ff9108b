"""`ContextSettings`: typed, checked at construction, sized for the model that answers."""

from __future__ import annotations

import pytest

from threadline.context.budget import DEFAULT_WINDOW, ContextBudget
from threadline.context.redaction import MASK, Redactor
from threadline.context.settings import ContextSettings
from threadline.context.tokens import ApproxCounter
from threadline.errors import ConfigError
from threadline.models.base import ModelProfile
from threadline.testing import ScriptedModel


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(ConfigError, match="unknown context format"):
        ContextSettings(format="yaml")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="tokenizer"):
        ContextSettings(tokenizer=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="redact"):
        ContextSettings(redact=3.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not a valid regex"):
        ContextSettings(redact=["(unclosed"])
    with pytest.raises(ConfigError, match="compact_to"):
        ContextSettings(compact_to=5.0)


def test_the_settings_win_then_the_model_then_the_defaults() -> None:
    small = ScriptedModel([], profile=ModelProfile(context_window=4_000, max_output_tokens=300))
    assert ContextSettings().budget_for(None).window == DEFAULT_WINDOW
    assert ContextSettings(model_id="openai:gpt-4o").budget_for(None).window == 128_000
    sized = ContextSettings().budget_for(small)
    assert (sized.window, sized.max_output_tokens) == (4_000, 300)
    explicit = ContextSettings(context_window=2_000, max_output_tokens=500).budget_for(small)
    assert (explicit.window, explicit.max_output_tokens) == (2_000, 500)
    whole = ContextBudget(window=9_000)
    assert ContextSettings(budget=whole, context_window=10).budget_for(small) is whole
    assert isinstance(ContextSettings().counter_for(None), ApproxCounter)
    assert ContextSettings(model_id="openai:gpt-4o").counter_for(None).name == "o200k_base"


def test_storage_redaction_follows_the_settings() -> None:
    text = "password=hunter2secret"
    assert ContextSettings().storage_redactor is not None
    assert MASK in ContextSettings().redactor(text)  # type: ignore[misc]
    assert ContextSettings(store_secrets=True).storage_redactor is None
    assert ContextSettings(store_secrets=True).redactor is not None  # the model still sees masks
    assert ContextSettings(redact=False).redactor is None
    mine = Redactor(values=["blue-falcon-42"])
    assert ContextSettings(redact=mine).redactor is mine
