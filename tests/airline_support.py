"""The 200 recorded tau-bench airline conversations (GPT-4o) as Threadline threads.

The recorded assistant turns are the model's answers (`ScriptedModel`); the recorded tool
results answer the agent's calls, in the order recorded for each tool and arguments (not by
call id: GPT-4o reused an id in some runs, and the runtime gives such a call a fresh one);
every write (book, cancel, update, send_certificate) asks for approval, and a person
approves each one. Shared by the replay, guard and rate-limit tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from shared_data import SHARED, require_shared
from threadline import Agent, MemoryStore, Runtime, Status
from threadline.events import RawToolCall, Thread
from threadline.models.base import ModelOutput, ModelProfile
from threadline.stores.base import Store
from threadline.testing import ScriptedModel, intent
from threadline.tools import Tool

__all__ = [
    "READ_ONLY",
    "TAU",
    "Results",
    "airline_agent",
    "call_key",
    "recorded_answers",
    "run_recorded",
    "tau_runs",
]

TAU = SHARED / "tau-bench-airline"
READ_ONLY = ("get_", "list_", "search_", "calculate", "think")


Results = dict[str, list[Any]]
"""Recorded results by `call_key(tool, arguments)`, in the order they were recorded."""


def call_key(tool: str, arguments: Any) -> str:
    """A call's identity: its tool and its arguments (key order ignored)."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return f"{tool} {arguments}"
    return f"{tool} {json.dumps(arguments, sort_keys=True)}"


def airline_agent(
    results: Results,
    guards: Sequence[Any] = (),
    *,
    name: str = "airline",
    on_call: Callable[[str], None] | None = None,
    **options: Any,
) -> Agent:
    """The airline agent: the 14 tools of tools.json, each answering with the next recorded
    result of the same call (telling `on_call` the tool's name first); writes need approval.
    `options` are more `Agent` settings, over these."""
    tools = [
        _recorded_tool(
            spec["function"], results, not spec["function"]["name"].startswith(READ_ONLY), on_call
        )
        for spec in json.loads((TAU / "tools.json").read_text())
    ]
    settings: dict[str, Any] = {"max_steps": 1000, "max_consecutive_errors": 1000, **options}
    return Agent(name, tools=tools, guards=guards, **settings)


def _recorded_tool(
    fn: dict[str, Any], results: Results, write: bool, on_call: Callable[[str], None] | None
) -> Tool:
    name = fn["name"]

    def run(arguments: dict[str, Any]) -> Any:
        if on_call is not None:
            on_call(name)
        queue = results.get(call_key(name, arguments))
        return queue.pop(0) if queue else "ok"

    return Tool.from_json_schema(
        name,
        fn["parameters"],
        run,
        description=fn.get("description", ""),
        side_effects=write,
        approval="always" if write else "never",
    )


def recorded_answers(traj: list[dict[str, Any]]) -> tuple[list[Any], list[str], Results]:
    """(the model's answers, the user's messages, the recorded tool results)."""
    answers: list[Any] = []
    users: list[str] = []
    results: Results = {}
    asked: dict[str, str] = {}
    for m in traj:
        if m["role"] == "user":
            users.append(m["content"])
        elif m["role"] == "tool":
            results.setdefault(asked[m["tool_call_id"]], []).append(m["content"])
        elif m["role"] == "assistant":
            calls = m.get("tool_calls") or []
            for c in calls:
                asked[c["id"]] = call_key(c["function"]["name"], c["function"]["arguments"])
            if calls:
                raw = tuple(
                    RawToolCall(
                        id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"]
                    )
                    for c in calls
                )
                answers.append(
                    ModelOutput(
                        text=m.get("content") or "",
                        tool_calls=raw,
                        model="gpt-4o",
                        input_tokens=0,
                        output_tokens=0,
                    )
                )
            else:
                answers.append(intent("request_more_information", message=m["content"] or ""))
    return answers, users, results


async def run_recorded(
    run: dict[str, Any],
    guards: Sequence[Any] = (),
    profile: ModelProfile | None = None,
    store: Store | None = None,
    **options: Any,
) -> tuple[Agent, Thread]:
    """Run one recorded conversation to its end (approving every write as asked), the
    scripted model declaring `profile` (a price, for budgets), in `store` (a new
    `MemoryStore` by default)."""
    answers, users, results = recorded_answers(run["traj"])
    agent = airline_agent(results, guards, **options)
    model = ScriptedModel(answers, profile=profile)
    rt = Runtime(MemoryStore() if store is None else store, agents=[agent], model=model)
    thread = await rt.launch(agent, users.pop(0))
    for _ in range(500):
        if thread.status == Status.AWAITING_APPROVAL:
            call_id = next(c for c, p in thread.state.pending.items() if p.approval == "requested")
            thread = await rt.approve(thread.id, call_id)
        elif thread.status == Status.AWAITING_HUMAN and users and model.remaining:
            thread = await rt.respond(thread.id, thread.state.human_request, users.pop(0))
        else:
            break
        thread = await rt.advance(thread.id)
    return agent, thread


def tau_runs() -> list[dict[str, Any]]:
    """The 200 recorded runs (skips, or fails in CI, when the shared data is absent)."""
    path = TAU / "trajectories-gpt-4o.json"
    require_shared(path)
    return json.loads(path.read_text())  # type: ignore[no-any-return]
