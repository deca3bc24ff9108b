"""The OpenAI backend driving agents against a real OpenAI-compatible server.

The server is llama-cpp-python's own (`python -m llama_cpp.server`, extra `local-server`)
serving the embedded SmolLM2-135M GGUF on a free loopback port, started once per session.
Its config file serves the same file under two names: `smollm2` with the model's own chat
template (for `json_object` mode) and `smollm2-tools` with `chatml-function-calling` (the
chat format llama-cpp-python needs for `tools` mode). Requests go through the official
`openai` SDK and the public `Runtime` API, exactly as a user configures it:
`openai:smollm2?server=llama-cpp-python&base_url=...`.

These are `local_model` tests and run in CI: there a missing extra fails them (never a
skip). Model calls are few (two cores): the assertions are about the protocol and the
runtime (schema-valid intents, the right statuses), not about the tiny model's arithmetic.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

if os.environ.get("CI", "").lower() == "true":
    import llama_cpp.server  # noqa: F401  (in CI the real server must run: fail, never skip)
    import openai  # noqa: F401
else:
    pytest.importorskip("llama_cpp.server", reason="needs threadline[local-server]")
    pytest.importorskip("openai", reason="needs threadline[openai]")

from profile_support import count_next_call  # noqa: E402

from threadline import MemoryStore, Runtime, Status  # noqa: E402
from threadline.models.local import default_model_path  # noqa: E402
from threadline.models.registry import resolve_model  # noqa: E402

# Generous bounds: on a shared two-core machine under load one call can take minutes.
pytestmark = [pytest.mark.local_model, pytest.mark.timeout(1800)]

_READY_TIMEOUT = 180.0
_CALL_TIMEOUT = "600"


class LlamaServer:
    """A running `python -m llama_cpp.server`: its base URL, process and log file."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.log = log

    def log_tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            pytest.fail(
                f"llama_cpp.server exited with code {code}; its log ends:\n{self.log_tail()}",
                pytrace=False,
            )

    def spec(self, model: str = "smollm2", **options: str) -> str:
        query = {
            "server": "llama-cpp-python",
            "temperature": "0",
            "max_tokens": "160",
            "timeout": _CALL_TIMEOUT,
            "retries": "1",
            **options,
        }
        args = "&".join(f"{k}={v}" for k, v in query.items())
        return f"openai:{model}?{args}&base_url={self.base_url}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(log_dir: Path, n_ctx: int = 2048) -> LlamaServer:
    port = _free_port()
    log = log_dir / f"llama-server-{port}.log"
    gguf = str(default_model_path())
    # One thread: the test process and the server share two cores.
    common = {"model": gguf, "n_ctx": n_ctx, "n_threads": 1}
    config = log_dir / "llama-server.json"
    config.write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "port": port,
                "models": [
                    {**common, "model_alias": "smollm2"},
                    {
                        **common,
                        "model_alias": "smollm2-tools",
                        "chat_format": "chatml-function-calling",
                    },
                ],
            }
        )
    )
    command = [sys.executable, "-m", "llama_cpp.server", "--config_file", str(config)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = LlamaServer(process, port, log)
    deadline = time.monotonic() + _READY_TIMEOUT
    while True:
        server.check_alive()
        try:
            with urllib.request.urlopen(f"{server.base_url}/models", timeout=2) as reply:
                if reply.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            _stop(server)
            pytest.fail(
                f"llama_cpp.server not ready after {_READY_TIMEOUT:g}s; its log ends:\n"
                f"{server.log_tail()}",
                pytrace=False,
            )
        time.sleep(0.25)


def _stop(server: LlamaServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=15)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """llama-cpp-python's server on a free loopback port (default chat format)."""
    server = _start(tmp_path_factory.mktemp("llama-server"))
    try:
        yield server
    finally:
        _stop(server)


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """The same server started with a 512-token window (`--n_ctx 512`)."""
    server = _start(tmp_path_factory.mktemp("llama-server-512"), n_ctx=512)
    try:
        yield server
    finally:
        _stop(server)


@pytest.fixture
def live(llama_server: LlamaServer) -> Iterator[LlamaServer]:
    """The session server, checked alive before and after each test (its log if it died)."""
    llama_server.check_alive()
    yield llama_server
    llama_server.check_alive()


async def test_calculator_reaches_done_or_approval_through_json_object(
    calculator: ModuleType, live: LlamaServer
) -> None:
    model = resolve_model(live.spec())
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(calculator.agent, "divide 84 by 2")
    kinds = [e.kind for e in thread.events]
    assert thread.status in (Status.DONE, Status.AWAITING_APPROVAL), (thread.status, kinds)
    assert "model_error" not in kinds, kinds
    calls = [e for e in thread.events if e.kind == "model_call"]
    assert calls and all(c.model == "openai:smollm2" for c in calls)
    assert all(c.input_tokens > 0 and c.output_tokens > 0 for c in calls)
    if thread.status == Status.AWAITING_APPROVAL:
        (pending,) = thread.state.pending.values()
        assert pending.tool == "divide"
        assert set(pending.arguments) == {"a", "b"}


async def test_deploybot_asks_approval_for_a_schema_valid_production_deploy(
    deploybot: ModuleType, live: LlamaServer
) -> None:
    model = resolve_model(live.spec())
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(deploybot.agent, "deploy the backend v1.5.0 to production")
    kinds = [e.kind for e in thread.events]
    assert thread.status in (Status.AWAITING_APPROVAL, Status.DONE), (thread.status, kinds)
    assert "model_error" not in kinds, kinds
    if thread.status == Status.AWAITING_APPROVAL:
        (pending,) = thread.state.pending.values()
        tool = deploybot.agent.registry.get(pending.tool, pending.version)
        assert tool is not None and tool.side_effects
        tool.validate(pending.arguments)  # schema-valid, or this raises
        requested = next(e for e in thread.events if e.kind == "approval_requested")
        assert requested.call_id == pending.call_id


async def test_json_schema_mode_is_refused_once_and_escalates_with_the_servers_message(
    calculator: ModuleType, live: LlamaServer
) -> None:
    # llama-cpp-python's server accepts only text/json_object response formats: as the
    # `generic` kind in json_schema mode the request is invalid, so it is sent once.
    model = resolve_model(live.spec(server="generic", mode="json_schema", retries="4"))
    thread = await Runtime(MemoryStore(), model=model).launch(calculator.agent, "1+1")
    assert [e.kind for e in thread.events] == ["user_message", "model_error", "escalated"]
    error = thread.events[1]
    assert error.error_type == "InvalidRequest" and error.attempts == 1
    assert "HTTP 500" in error.message and "json_object" in error.message


async def test_tools_mode_with_the_function_calling_chat_format(
    calculator: ModuleType, live: LlamaServer
) -> None:
    # tools mode sends tool_choice="auto" (this server asserts on "required"); one step.
    model = resolve_model(live.spec("smollm2-tools", mode="tools"))
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(calculator.agent, "divide 84 by 2", advance=False)
    thread = await rt.advance(thread, max_steps=1)
    kinds = [e.kind for e in thread.events]
    assert kinds[:2] == ["user_message", "model_call"], kinds
    call = thread.events[1]
    assert call.tool_calls, call.output  # a native tool call, not prose
    assert kinds[2] == "tool_call", (kinds, thread.state.last_error)
    assert thread.events[2].tool in {
        "add",
        "subtract",
        "multiply",
        "divide",
        "done_for_now",
        "request_more_information",
    }


async def test_a_judge_on_the_server_rules_on_a_destructive_call_through_json_object(
    live: LlamaServer,
) -> None:
    """A dispatch judge (issue 13) on an OpenAI-compatible server: its verdict comes back
    through the schema-constrained JSON mode, is recorded, and the runtime obeys it."""
    from guard_support import DROPPED, archive_table, drop_table
    from threadline import Agent, Judge
    from threadline.events import GuardVerdict
    from threadline.judge import parse_verdict
    from threadline.testing import ScriptedModel, intent

    DROPPED.clear()
    judge = Judge(resolve_model(live.spec()), policy="Deleting data is forbidden.")
    agent = Agent("ops", tools=[drop_table, archive_table], guards=[judge])
    main = ScriptedModel(
        [intent("drop_table", table="orders"), intent("done_for_now", message="ok")]
    )
    thread = await Runtime(MemoryStore(), model=main).launch(agent, "drop the orders table")
    assert thread.status != Status.RUNNING
    (verdict,) = [e for e in thread.events if isinstance(e, GuardVerdict)]
    assert not verdict.failed, verdict.reason  # the server's answer was a verdict
    assert verdict.model == "openai:smollm2" and verdict.input_tokens > 0
    assert parse_verdict(verdict.output).verdict == verdict.verdict
    assert verdict.prompt_name == "dispatch-judge" and verdict.prompt_hash == judge.prompt.sha256
    assert (DROPPED == ["orders"]) == (verdict.verdict == "allow")


async def test_profile_and_render_count_what_the_server_counts(
    live: LlamaServer, tmp_path: Path
) -> None:
    """In json_object mode the tools travel as signatures in the system text and the
    schema as a grammar: `threadline profile` / `render` count that, with the server's own
    tokenizer, in the server's window (its n_ctx, not the 8,192 SmolLM2 was trained for),
    within a few percent of the prompt_tokens the server reports for that call."""
    spec = live.spec()
    counted = await count_next_call(tmp_path, spec, resolve_model(spec))
    assert counted.window == 2048
    assert counted.profile == counted.render
    assert abs(counted.render - counted.reported) <= 0.03 * counted.reported, counted


_PAGE = " ".join(f"line {i}: the quick brown fox jumps over the lazy dog." for i in range(120))


def fetch_page(url: str) -> str:
    """Fetch a web page's text."""
    return _PAGE


async def test_a_window_the_server_says_is_learned_and_the_call_made_once_more(
    small_server: LlamaServer,
) -> None:
    """The spec says 2,048 tokens, the server serves 512: the first request (a page of
    ~1,000 tokens verbatim) is refused with the window; the model keeps it and the context
    is rendered under it (the page cut) and sent again: one `model_call`, no error. Under
    a token budget the refused call is settled as a call that used nothing."""
    from threadline import Agent, Budget, tool
    from threadline.testing import ScriptedModel, intent

    agent = Agent(
        "reader",
        instructions="Answer from the page.",
        tools=[tool(fetch_page)],
        budget=Budget(max_tokens=100_000),
    )
    store = MemoryStore()
    scripted = ScriptedModel([intent("fetch_page", url="https://example.org")])
    rt = Runtime(store, agents=[agent], model=scripted)
    thread = await rt.launch(agent, "what does the page say?", advance=False)
    thread = await rt.advance(thread, max_steps=2)
    assert [e.kind for e in thread.events][-1] == "tool_result"
    model = resolve_model(small_server.spec(n_ctx="2048", max_tokens="40"))
    assert model.profile.context_window == 2048
    rt = Runtime(store, agents=[agent], model=model)
    before = len(thread.events)
    thread = await rt.advance(thread.id, max_steps=1)
    # The second rendering may compact (the summary is stored first, as for any render).
    new = [e for e in thread.events[before:] if e.kind != "compacted"]
    kinds = [e.kind for e in new]
    assert kinds[:5] == [
        "budget_reserved",
        "budget_settled",
        "budget_reserved",
        "budget_settled",
        "model_call",
    ], kinds
    assert "model_error" not in kinds, kinds
    refused, answered = new[1], new[3]
    assert (refused.calls, refused.tokens) == (1, 0)
    assert answered.tokens > 0
    assert new[2].input_tokens <= 512 < new[0].input_tokens  # rendered again, smaller
    assert 0 < new[4].input_tokens <= 512
    calibration = model.profile.calibration
    assert model.profile.context_window == 512
    assert calibration is not None and calibration.window == 512
    assert rt.renderer("reader").budget.window <= 512


async def test_a_message_too_large_for_the_learned_window_escalates_with_the_budget_error(
    small_server: LlamaServer,
) -> None:
    """Under the window the server said, even the newest message does not fit: the thread
    escalates as for any context that cannot fit (no request the server would refuse)."""
    from threadline import Agent

    model = resolve_model(small_server.spec(n_ctx="2048", max_tokens="40"))
    agent = Agent("echo", instructions="Repeat the text.")
    rt = Runtime(MemoryStore(), agents=[agent], model=model)
    thread = await rt.launch(agent, "repeat: " + "many words of text " * 150)
    kinds = [e.kind for e in thread.events]
    assert kinds == ["user_message", "token_budget_exceeded", "escalated"], kinds
    assert model.profile.context_window == 512


async def test_tools_mode_counts_are_corrected_by_the_servers_usage(
    calculator: ModuleType, live: LlamaServer
) -> None:
    """The function-calling chat template adds text the renderer does not count: after one
    answer the model's correction says by how much, and the renderer plans in less."""
    model = resolve_model(live.spec("smollm2-tools", mode="tools"))
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(calculator.agent, "divide 84 by 2", advance=False)
    thread = await rt.advance(thread, max_steps=1)
    (call,) = [e for e in thread.events if e.kind == "model_call"]
    calibration = model.profile.calibration
    assert calibration is not None and calibration.answers == 1
    renderer = rt.renderer(calculator.agent.name)
    renderer.bind(model)  # as before the next call: the budget follows the correction
    counted = renderer.render(thread.__class__(thread.id, thread.agent, thread.events[:1]))
    assert counted.context.input_tokens is not None
    assert calibration.factor == pytest.approx(call.input_tokens / counted.context.input_tokens)
    assert calibration.factor > 1.03, (call.input_tokens, counted.context.input_tokens)
    budget = renderer.budget
    assert budget.window < 2048
    assert budget.window == budget.max_output_tokens + int(
        (2048 - budget.max_output_tokens) / calibration.scale
    )
