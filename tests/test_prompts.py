"""Prompt templates: front matter, StrictUndefined, variables, hashes, regression cases."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from threadline import Agent, ContextSettings, MemoryStore, Runtime, tool
from threadline.errors import PromptError
from threadline.prompts import Prompt, load_cases, prompt_for, renderer_for, run_cases
from threadline.testing import FunctionModel, ScriptedModel, intent

ROOT = Path(__file__).resolve().parent.parent

TEMPLATE = """---
name: greeter
version: 2.1.0
model: openai:gpt-4.1-mini
tools: [wave]
variables:
  company: Acme
---
You greet visitors of {{ company }}. Tools: {% for t in tools %}{{ t.name }} {% endfor %}
"""


@tool
def wave(to: str) -> str:
    """Wave at someone."""
    return f"waved at {to}"


def test_front_matter_and_hash(tmp_path: Path) -> None:
    path = tmp_path / "greeter.md.j2"
    path.write_text(TEMPLATE)
    prompt = Prompt.load(path)
    assert (prompt.name, prompt.version, prompt.model, prompt.tools) == (
        "greeter",
        "2.1.0",
        "openai:gpt-4.1-mini",
        ("wave",),
    )
    assert prompt.sha256 == hashlib.sha256(TEMPLATE.encode()).hexdigest()
    assert prompt.render_sample() == "You greet visitors of Acme. Tools: "
    assert prompt.cases_path == tmp_path / "greeter.cases.yaml"


def test_a_missing_variable_is_an_error_naming_it(tmp_path: Path) -> None:
    prompt = Prompt.from_text("Hello {{ user_name }}, today is {{ today }}.", path="p.md.j2")
    with pytest.raises(PromptError, match="'user_name' is undefined"):
        prompt.render({"today": "Monday"})
    with pytest.raises(PromptError, match="p.md.j2"):
        prompt.render({})


@pytest.mark.parametrize(
    "text, message",
    [
        ("---\nname: x\n", "never ends"),
        ("---\nname: [unclosed\n---\nhi", "not valid YAML"),
        ("---\nnmae: typo\n---\nhi", "unknown front matter keys: nmae"),
        ("---\ntools: wave\n---\nhi", "'tools' must be a list"),
        ("hi {% if %}", "template syntax error"),
    ],
)
def test_malformed_prompts_are_rejected_clearly(text: str, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        Prompt.from_text(text, path="bad.md.j2")


def test_a_missing_file_is_a_prompt_error(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="cannot be read"):
        prompt_for(Agent("a", prompt=str(tmp_path / "nope.md.j2")))


async def test_runtime_variables_come_from_options_and_thread_metadata(tmp_path: Path) -> None:
    path = tmp_path / "p.md.j2"
    path.write_text("Agent {{ agent }} for {{ company }}; user {{ user }}.")
    agent = Agent(
        "greeter",
        tools=[wave],
        prompt=str(path),
        context=ContextSettings(prompt_vars={"company": "Acme"}),
    )
    model = ScriptedModel([intent("done_for_now", message="hi")])
    rt = Runtime(MemoryStore(), agents=[agent], model=model)
    await rt.launch(agent, "hello", metadata={"prompt_vars": {"user": "ada"}})
    assert model.contexts[0].system.startswith("Agent greeter for Acme; user ada.")
    # Without the per-thread variable the run escalates instead of sending a broken prompt.
    thread = await rt.launch(agent, "hello again")
    assert thread.status.value == "escalated"
    assert "'user' is undefined" in thread.events[-1].reason  # type: ignore[union-attr]
    await rt.replay(thread.id)


def test_the_prompt_is_loaded_once(tmp_path: Path) -> None:
    from threadline.events import Thread, UserMessage, utcnow

    path = tmp_path / "p.md.j2"
    path.write_text("version one")
    agent = Agent("once", tools=[wave], prompt=str(path))
    thread = Thread("t", "once", [UserMessage(seq=0, at=utcnow(), text="hi")])
    renderer = renderer_for(agent)
    assert renderer.render(thread).context.system.startswith("version one")
    path.write_text("version two")  # edits after start-up need a new build and release
    assert renderer.render(thread).context.system.startswith("version one")


def test_example_cases_parse_and_bad_cases_are_rejected(tmp_path: Path) -> None:
    cases = load_cases(ROOT / "examples" / "calculator" / "prompt.cases.yaml")
    assert [c.expect_intent for c in cases] == ["add", "done_for_now", "request_more_information"]
    bad = tmp_path / "x.cases.yaml"
    bad.write_text("- name: no expectation\n  thread: hi\n")
    with pytest.raises(PromptError, match="case 1"):
        load_cases(bad)


async def test_regression_cases_pass_and_fail_on_the_chosen_intent(calculator) -> None:
    def model(context):
        text = context.messages[-1].content
        if "<add_result>" in text:
            return intent("done_for_now", message="7")
        if "flight" in text:
            return intent("request_more_information", message="I only do arithmetic")
        return intent("add", a=3, b=4)

    results = await run_cases(calculator.agent, FunctionModel(model))
    assert [r.passed for r in results] == [True, True, True]
    wrong = await run_cases(calculator.agent, FunctionModel(lambda c: intent("add", a=1, b=1)))
    assert [r.passed for r in wrong] == [False, False, False]
    # The model wrote integers; the log holds exactly what it wrote (issue 10), not 1.0.
    assert wrong[0].got == 'add {"a": 1, "b": 1}'
