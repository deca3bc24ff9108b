"""Models declare their capabilities as typed data: `ModelProfile`."""

from __future__ import annotations

from threadline import Agent, ContextSettings, MemoryStore, Runtime, Status, tool
from threadline.context.tokens import CallableCounter, counter_for_model
from threadline.models.base import ModelProfile, known_encoding, known_window
from threadline.testing import ScriptedModel, intent


def test_what_a_model_id_tells() -> None:
    assert known_window("openai:gpt-4.1-mini") == 1_000_000
    assert known_window("anthropic:claude-sonnet-4-5") == 200_000
    assert known_window("openai:org/SmolLM2-135M") == 8_192
    assert known_window("openai:mystery") is None
    assert known_encoding("openai:gpt-4o-mini") == "o200k_base"
    assert known_encoding("openai:gpt-4-turbo") == "cl100k_base"
    assert known_encoding("anthropic:claude-x") is None
    profile = ModelProfile.for_id("openai:gpt-4o", output_modes=("tools",))
    assert profile == ModelProfile(128_000, None, "o200k_base", frozenset({"tools"}))
    assert ModelProfile.for_id("openai:gpt-4o", context_window=8_000).context_window == 8_000


def test_a_chain_is_as_narrow_as_its_narrowest_model() -> None:
    wide = ModelProfile(1_000_000, 4_000, "o200k_base", frozenset({"tools", "json_schema"}))
    small = ModelProfile(8_000, None, None, frozenset({"tools"}))
    both = ModelProfile.narrowest([wide, small])
    assert both == ModelProfile(8_000, 4_000, "o200k_base", frozenset({"tools"}))
    assert ModelProfile.narrowest([]) == ModelProfile()


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key} " * 400


async def test_the_renderer_sizes_the_budget_from_the_profile() -> None:
    words = ModelProfile(
        context_window=900, max_output_tokens=64, tokenizer=lambda t: len(t.split())
    )
    model = ScriptedModel(
        [intent("lookup", key="a"), intent("done_for_now", message="ok")], profile=words
    )
    assert isinstance(counter_for_model(model), CallableCounter)
    agent = Agent("sized", tools=[lookup], instructions="Look it up.")
    rt = Runtime(MemoryStore(), agents=[agent], model=model)
    thread = await rt.launch(agent, "look a up")
    assert thread.status is Status.DONE
    assert {c.max_output_tokens for c in model.contexts} == {64}
    assert all(c.input_tokens is not None and c.input_tokens <= 900 - 64 for c in model.contexts)
    assert "[truncated: full result in event" in model.contexts[-1].messages[0].content
    # Settings still win over what the model declares.
    pinned = Agent("pinned", tools=[lookup], context=ContextSettings(max_output_tokens=100))
    assert pinned.context.budget_for(model).max_output_tokens == 100


def test_a_context_made_of_its_fields_is_the_constructed_one() -> None:
    import dataclasses

    import pytest

    from threadline.models.base import Context, Message

    made = Context(system="s", messages=(Message("user", "hi"),), input_tokens=7, model_calls=2)
    values = {f.name: getattr(made, f.name) for f in dataclasses.fields(Context)}
    again = Context.of(dict(values))
    assert again == made and repr(again) == repr(made)
    with pytest.raises(dataclasses.FrozenInstanceError):
        again.system = "other"  # type: ignore[misc]
    assert made.at_call(5) == dataclasses.replace(made, model_calls=5)
    del values["model_calls"]
    with pytest.raises(TypeError, match="a context's fields"):
        Context.of(values)
    with pytest.raises(TypeError, match="a context's fields"):
        Context.of({**values, "model_calls": 0, "extra": 1})
