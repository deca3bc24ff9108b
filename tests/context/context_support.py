"""Helpers shared by the context tests (importable by name: tests/context is on the path)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

from shared_data import require_shared
from threadline import Agent, ContextSettings, MemoryStore, Runtime, tool
from threadline.context.base import Rendered
from threadline.prompts import renderer_for
from threadline.testing import ScriptedModel, intent

__all__ = ["ROOT", "TAU", "fetch", "finished_calculator", "render", "tau_runs"]

ROOT = Path(__file__).resolve().parents[2]
TAU = ROOT.parent / "shared" / "data" / "tau-bench-airline"


@tool
def fetch(key: str) -> dict[str, Any]:
    """Fetch a record."""
    return {"key": key}


def render(agent: Agent, thread: Any, fmt: str | None = None) -> Rendered:
    """What `agent`'s renderer makes of `thread` (a fresh renderer, as after a restart)."""
    return renderer_for(agent).render(thread, fmt)


async def finished_calculator(calculator: ModuleType, **settings: object) -> tuple:
    """The calculator after "what is 2 + 3?": (agent, thread, scripted model)."""
    agent = calculator.agent
    if settings:
        agent = Agent(
            "calculator",
            tools=[calculator.add, calculator.divide],
            prompt=agent.prompt,
            context=ContextSettings(**settings),  # type: ignore[arg-type]
        )
    model = ScriptedModel([intent("add", a=2, b=3), intent("done_for_now", message="5")])
    rt = Runtime(MemoryStore(), agents=[agent], model=model)
    thread = await rt.launch(agent.name, "what is 2 + 3?")
    return agent, thread, model


def tau_runs() -> list[dict[str, Any]]:
    path = TAU / "trajectories-gpt-4o.json"
    require_shared(path)
    return json.loads(path.read_text())  # type: ignore[no-any-return]
