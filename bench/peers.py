"""The same agent loop on peer frameworks, when installed (`make bench` installs them).

One loop is 10 model turns: 9 calls of a cheap read-only `lookup` tool, then a final answer,
from an instant scripted model that makes no network call: the same loop bench/loop.py runs
through Threadline and LangGraph. A figure is wall time per model turn, in memory (neither
framework persists a run by default).

  * pydantic-ai: `Agent(FunctionModel(...))` with the tool registered by `@agent.tool_plain`,
    one `agent.run(...)` per loop.
  * OpenAI Agents SDK: an `Agent` whose `model` is a `Model` subclass answering from the
    script, the tool made with `@function_tool`, one `Runner.run(...)` per loop, tracing off.

Each function returns None when its framework is not installed.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

TURNS = 10


async def _lookup(key: str) -> str:
    return key.upper()


def pydantic_ai_us(loops: int) -> float | None:
    """Microseconds per model turn for pydantic-ai on the loop, or None if not installed."""
    try:
        from pydantic_ai import Agent
        from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
        from pydantic_ai.models.function import AgentInfo, FunctionModel
    except ImportError:
        return None

    def script(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        turn = 1 + sum(isinstance(m, ModelResponse) for m in messages)
        if turn >= TURNS:
            return ModelResponse(parts=[TextPart("ABC")])
        return ModelResponse(
            parts=[ToolCallPart("lookup", {"key": "abc"}, tool_call_id=f"c{turn}")]
        )

    agent: Any = Agent(FunctionModel(script))

    @agent.tool_plain
    async def lookup(key: str) -> str:
        """Read-only lookup of a key."""
        return await _lookup(key)

    async def go() -> float:
        started = time.perf_counter()
        for _ in range(loops):
            result = await agent.run("look up abc")
            if result.output != "ABC":
                raise RuntimeError(f"pydantic-ai loop ended with {result.output!r}")
        return (time.perf_counter() - started) / (loops * TURNS) * 1e6

    return asyncio.run(go())


def openai_agents_us(loops: int) -> float | None:
    """Microseconds per model turn for the OpenAI Agents SDK, or None if not installed."""
    try:
        from agents import Agent, Runner, function_tool, set_tracing_disabled
        from agents.items import ModelResponse
        from agents.models.interface import Model
        from agents.usage import Usage
        from openai.types.responses import (
            ResponseFunctionToolCall,
            ResponseOutputMessage,
            ResponseOutputText,
        )
    except ImportError:
        return None
    set_tracing_disabled(True)

    class ScriptModel(Model):  # type: ignore[misc]
        async def get_response(self, *args: Any, **kwargs: Any) -> Any:
            items = kwargs.get("input", args[1] if len(args) > 1 else [])
            done = sum(
                1
                for item in (items if isinstance(items, list) else [])
                if isinstance(item, dict) and item.get("type") == "function_call_output"
            )
            turn = done + 1
            if turn >= TURNS:
                output: list[Any] = [
                    ResponseOutputMessage(
                        id=f"m{turn}",
                        content=[
                            ResponseOutputText(annotations=[], text="ABC", type="output_text")
                        ],
                        role="assistant",
                        status="completed",
                        type="message",
                    )
                ]
            else:
                output = [
                    ResponseFunctionToolCall(
                        arguments=json.dumps({"key": "abc"}),
                        call_id=f"c{turn}",
                        name="lookup",
                        type="function_call",
                        id=f"fc{turn}",
                        status="completed",
                    )
                ]
            return ModelResponse(output=output, usage=Usage(), response_id=None)

        def stream_response(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError("the bench does not stream")

    @function_tool
    async def lookup(key: str) -> str:
        """Read-only lookup of a key."""
        return await _lookup(key)

    agent = Agent(name="bench", instructions="bench", tools=[lookup], model=ScriptModel())

    async def go() -> float:
        started = time.perf_counter()
        for _ in range(loops):
            result = await Runner.run(agent, "look up abc", max_turns=TURNS + 5)
            if result.final_output != "ABC":
                raise RuntimeError(f"openai-agents loop ended with {result.final_output!r}")
        return (time.perf_counter() - started) / (loops * TURNS) * 1e6

    return asyncio.run(go())


__all__ = ["openai_agents_us", "pydantic_ai_us"]
