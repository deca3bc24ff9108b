"""A thread a cancel ended while two calls waited for approval (one approved, one not), then
resumed: what the model is shown of the two withdrawn calls, in each format and backend."""

from __future__ import annotations

from threadline import Agent, ContextSettings, MemoryStore, Model, Runtime, Status, Thread, tool
from threadline.events import Failed

__all__ = ["cancelled_then_resumed", "wire_agent"]


@tool(side_effects=True, approval="always")
def wire(amount: int) -> str:
    """Wire money (a person approves each wire)."""
    raise AssertionError("a withdrawn call never runs")


def wire_agent(fmt: str) -> Agent:
    """An agent whose one tool waits for a person's approval, rendering in format `fmt`."""
    return Agent(
        "wires",
        tools=[wire],
        instructions="Wire money when asked.",
        context=ContextSettings(format=fmt),  # type: ignore[arg-type]
    )


async def cancelled_then_resumed(agent: Agent, model: Model) -> tuple[Thread, tuple[str, ...]]:
    """Launch `agent` on `model`, whose first answer asks for two wires: approve the first,
    cancel the thread, resume it and advance it to its end (the model's second answer).
    Returns the thread and the calls the cancel withdrew."""
    rt = Runtime(MemoryStore(), agents=[agent], model=model)
    thread = await rt.launch(agent, "wire 5 and 7")
    first, second = thread.state.pending
    await rt.approve(thread.id, first, by="ana")
    cancelled = await rt.cancel(thread.id, by="ops")
    failed = cancelled.events[-1]
    assert isinstance(failed, Failed) and failed.withdrawn == (first, second)
    await rt.resume(thread.id, by="ops")
    done = await rt.advance(thread.id)
    assert done.status is Status.DONE
    return done, failed.withdrawn
