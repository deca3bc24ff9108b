"""`threadline.overflow`: a call refused for the server's window is made once more, never
twice; a refusal that taught nothing fails the step as any invalid request.

The refusals here come from a test model raising what `OpenAIModel` raises; the real
server's refusal (llama-cpp-python at `--n_ctx 512`) is in
tests/models/test_openai_server.py."""

from __future__ import annotations

import pytest

from threadline import Agent, MemoryStore, Runtime
from threadline.errors import ConfigError, ContextOverflow
from threadline.models.base import Context
from threadline.overflow import model_of
from threadline.testing import FunctionModel, ScriptedModel, intent


def _refusing(learned: bool) -> FunctionModel:
    def refuse(context: Context) -> None:
        raise ContextOverflow(
            "HTTP 400: This model's maximum context length is 512 tokens.",
            window=512,
            learned=learned,
            status=400,
        )

    return FunctionModel(refuse)


@pytest.mark.parametrize("learned", [True, False])
async def test_a_refusal_is_sent_again_once_when_it_taught_the_model(learned: bool) -> None:
    model = _refusing(learned)
    agent = Agent("a", instructions="Answer.")
    thread = await Runtime(MemoryStore(), agents=[agent], model=model).launch(agent, "hi")
    # Taught something: rendered and sent once more, refused again, recorded then.
    assert len(model.contexts) == (2 if learned else 1)
    kinds = [e.kind for e in thread.events]
    assert kinds == ["user_message", "model_error", "escalated"], kinds
    error = thread.events[1]
    assert error.error_type == "ContextOverflow" and "512 tokens" in error.message


def test_the_model_that_answers_is_the_agents_else_the_runtimes() -> None:
    own = ScriptedModel([intent("done_for_now", message="ok")])
    default = ScriptedModel([])
    assert model_of(Agent("a", model=own), default) is own
    assert model_of(Agent("b"), default) is default
    with pytest.raises(ConfigError, match="agent 'b' has no model; set THREADLINE_MODEL"):
        model_of(Agent("b"), None)
