"""Server kinds, output modes and rejected requests of the OpenAI-compatible backend.

What each server kind is sent is checked on the real HTTP request the official `openai` SDK
builds (recorded exchanges, see recorded.py: the hosted APIs are unreachable from here).
The same modes against a real server are in test_openai_server.py.
"""

from __future__ import annotations

from types import ModuleType

import pytest
from recorded import Recorded, openai_completion, openai_error

from threadline import MemoryStore, Runtime, Status
from threadline.errors import ConfigError
from threadline.models.local import tools_prompt
from threadline.models.openai import SERVERS, OpenAIModel
from threadline.models.registry import resolve_model
from threadline.models.resilience import ResilientModel, RetryPolicy, is_invalid_request
from threadline.models.server_tokens import ServerTokenizer

ANSWER = '{"intent": "done_for_now", "arguments": {"message": "5"}}'


def backend(recorded: Recorded, **options: object) -> OpenAIModel:
    return OpenAIModel(
        "smollm2",
        base_url="http://127.0.0.1:9/v1",
        http_client=recorded.client(),
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def recorded() -> Recorded:
    return Recorded([openai_completion(content=ANSWER, model="smollm2")])


async def test_llama_cpp_python_defaults_to_json_object_with_the_schema(
    calculator: ModuleType, recorded: Recorded
) -> None:
    model = backend(recorded, server="llama-cpp-python")
    assert model.mode == "json_object"
    thread = await Runtime(MemoryStore(), model=model).launch(calculator.agent, "2 plus 3?")
    assert thread.status == Status.DONE and thread.events[-1].message == "5"
    body = recorded.bodies[0]
    fmt = body["response_format"]
    assert fmt["type"] == "json_object"
    assert fmt["schema"] == calculator.agent.output_schema()
    assert "tools" not in body and "tool_choice" not in body
    system = body["messages"][0]
    assert system["role"] == "system" and "- multiply(a: number, b: number)" in system["content"]


async def test_vllm_json_object_sends_the_schema_as_structured_outputs(
    calculator: ModuleType, recorded: Recorded
) -> None:
    model = backend(recorded, server="vllm", mode="json_object")
    await Runtime(MemoryStore(), model=model).launch(calculator.agent, "2 plus 3?")
    body = recorded.bodies[0]
    assert body["structured_outputs"] == {"json": calculator.agent.output_schema()}
    assert "response_format" not in body


@pytest.mark.parametrize(
    ("server", "tool_choice"),
    [
        ("openai", "required"),
        ("vllm", "required"),
        ("llama-server", "required"),
        ("llama-cpp-python", "auto"),
        ("lmstudio", "auto"),
        ("ollama", None),
    ],
)
async def test_tools_mode_sends_the_tool_choice_the_server_supports(
    calculator: ModuleType, server: str, tool_choice: str | None
) -> None:
    recorded = Recorded([openai_completion(tool_calls=[("done_for_now", '{"message": "5"}')])])
    model = backend(recorded, server=server, mode="tools")
    thread = await Runtime(MemoryStore(), model=model).launch(calculator.agent, "2 plus 3?")
    assert thread.status == Status.DONE
    body = recorded.bodies[0]
    assert body.get("tool_choice") == tool_choice
    assert {t["function"]["name"] for t in body["tools"]} >= {"add", "done_for_now"}
    assert "Tools:" not in body["messages"][0]["content"]  # native tools are not repeated


def test_defaults_follow_the_server_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert OpenAIModel("gpt-4.1-mini", api_key="k").server.name == "openai"
    local = OpenAIModel("m", base_url="http://127.0.0.1:9/v1")
    assert (local.server.name, local.mode) == ("generic", "tools")
    for name, profile in SERVERS.items():
        model = OpenAIModel("m", server=name, base_url="http://127.0.0.1:9/v1")
        assert model.mode == profile.modes[0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"server": "ollama", "mode": "json_object"}, "ollama does not support mode json_object"),
        ({"server": "llama-cpp-python", "mode": "json_schema"}, "use json_object, tools"),
        ({"server": "tgi"}, "unknown OpenAI-compatible server 'tgi'"),
        ({"mode": "xml"}, "must be one of json_schema, json_object, tools"),
    ],
)
def test_unsupported_configuration_is_a_config_error(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        OpenAIModel("m", base_url="http://127.0.0.1:9/v1", **options)


def test_the_model_spec_configures_server_mode_and_base_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model = resolve_model(
        "openai:smollm2?server=llama-cpp-python&base_url=http://127.0.0.1:9/v1&retries=2"
    )
    assert isinstance(model, ResilientModel) and model.policy.max_attempts == 2
    inner = model.model
    assert isinstance(inner, OpenAIModel)
    assert (inner.server.name, inner.mode) == ("llama-cpp-python", "json_object")
    assert str(inner.client.base_url) == "http://127.0.0.1:9/v1/"
    with pytest.raises(ConfigError, match="does not support mode"):
        resolve_model("openai:m?server=lmstudio&mode=json_object&base_url=http://h/v1")


def test_the_profile_declares_what_the_server_serves_and_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """llama-cpp-python serves 2,048 tokens unless told (`n_ctx=`), whatever the model was
    trained for, and counts with its own tokenizer; outside `tools` mode the tools are
    counted as the signatures the system text carries."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    base = "openai:smollm2?server=llama-cpp-python&base_url=http://127.0.0.1:9/v1"
    profile = resolve_model(base).profile
    assert profile.context_window == 2048  # not smollm2's 8,192
    assert profile.tools_text is tools_prompt
    assert isinstance(profile.tokenizer, ServerTokenizer)
    assert profile.tokenizer.url == "http://127.0.0.1:9/extras/tokenize/count"
    assert profile.tokenizer.model == "smollm2"
    assert resolve_model(f"{base}&n_ctx=4096").profile.context_window == 4096
    tools = resolve_model(f"{base}&mode=tools").profile
    assert tools.tools_text is None  # native definitions
    # A kind without those declarations keeps what the model name tells.
    generic = resolve_model("openai:smollm2?mode=json_object&base_url=http://127.0.0.1:9/v1")
    assert generic.profile.context_window == 8192 and generic.profile.tokenizer is None
    hosted = OpenAIModel("gpt-4.1-mini", api_key="k", base_url="https://api.openai.com/v1")
    assert (hosted.profile.context_window, hosted.profile.tokenizer) == (1_000_000, "o200k_base")


def test_each_base_url_has_its_own_breaker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    chain = resolve_model(
        "openai:gpt-4.1-mini,openai:smollm2?server=llama-cpp-python&base_url=http://h:8000/v1,"
        "openai:other?base_url=http://h:8000/v1"
    )
    first, second, third = chain.models  # type: ignore[attr-defined]
    assert first.breaker.provider == "openai"
    assert second.breaker.provider == "openai@http://h:8000/v1"
    assert second.breaker is third.breaker and first.breaker is not second.breaker


@pytest.mark.parametrize(
    ("status", "message", "invalid"),
    [
        (400, "Invalid schema for response_format", True),
        (404, "The model `nope` does not exist", True),
        (413, "Request Entity Too Large", True),
        (422, "Field required", True),
        (500, "1 validation error: Input should be 'text' or 'json_object'", True),
        (500, "The server had an error", False),
        (503, "overloaded", False),
        (429, "Rate limit reached", False),
        (401, "Incorrect API key provided", False),
    ],
)
def test_invalid_request_classification(status: int, message: str, invalid: bool) -> None:
    assert is_invalid_request(status, message) is invalid


# The body llama-cpp-python's server really answers a json_schema response_format with
# (HTTP 500 wrapping FastAPI's request-validation error; recorded from 0.3.36).
LLAMA_CPP_PYTHON_500 = (
    "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', "
    "'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', "
    "'ctx': {'expected': \"'text' or 'json_object'\"}}"
)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "Invalid schema for response_format"),
        (404, "The model `gpt-9` does not exist"),
        (422, "Field required: messages"),
        (500, LLAMA_CPP_PYTHON_500),
    ],
)
async def test_a_rejected_request_is_sent_once_and_escalates_with_the_servers_message(
    calculator: ModuleType, status: int, message: str
) -> None:
    recorded = Recorded([(status, openai_error(status, message, "invalid_request_error"))])
    model = ResilientModel(
        backend(recorded, server="generic", mode="json_schema"), RetryPolicy(max_attempts=4)
    )
    thread = await Runtime(MemoryStore(), model=model).launch(calculator.agent, "2 plus 3?")
    assert len(recorded.requests) == 1  # not retried, not asked again
    assert [e.kind for e in thread.events] == ["user_message", "model_error", "escalated"]
    error, escalated = thread.events[1], thread.events[2]
    assert error.error_type == "InvalidRequest" and not error.retryable and error.attempts == 1
    shown = " ".join(message.split())[:40]  # events hold the message on one line
    assert f"HTTP {status}" in error.message and shown in error.message
    assert thread.status == Status.ESCALATED
    assert shown in escalated.reason


async def test_a_server_error_without_a_validation_message_is_still_retried(
    calculator: ModuleType,
) -> None:
    from recorded import Sleeps

    recorded = Recorded([(500, openai_error(500, "The server had an error"))])
    model = ResilientModel(backend(recorded), RetryPolicy(max_attempts=3), sleep=Sleeps())
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(calculator.agent, "1+1", advance=False)
    thread = await rt.advance(thread, max_steps=1)
    assert len(recorded.requests) == 3
    assert thread.events[-1].error_type == "ModelError" and thread.events[-1].retryable
    assert thread.status == Status.RUNNING  # counted toward max_consecutive_errors, not final
