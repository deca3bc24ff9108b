"""examples/calculator driven by ScriptedModel: happy path, rejection, question, error spin."""

from __future__ import annotations

from types import ModuleType

from threadline import MemoryStore, Runtime, Status
from threadline.testing import ScriptedModel, intent


async def test_happy_path_with_an_approved_division(calculator: ModuleType) -> None:
    model = ScriptedModel(
        [
            intent("multiply", a=6, b=7),
            intent("divide", a=42, b=2),
            intent("done_for_now", message="21"),
        ]
    )
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(calculator.agent, "6*7, halved")
    assert thread.status == Status.AWAITING_APPROVAL
    (call_id,) = thread.state.pending
    await rt.approve(thread.id, call_id)
    thread = await rt.advance(thread.id)
    assert thread.status == Status.DONE
    results = [e.result for e in thread.events if e.kind == "tool_result"]
    assert results == [42.0, 21.0]
    assert thread.events[-1].message == "21"


async def test_rejected_division_is_seen_by_the_model(calculator: ModuleType) -> None:
    model = ScriptedModel([intent("divide", a=1, b=3), intent("done_for_now", message="ok")])
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(calculator.agent, "1/3")
    (call_id,) = thread.state.pending
    await rt.approve(thread.id, call_id, approved=False, comment="use fractions instead")
    thread = await rt.advance(thread.id)
    assert thread.status == Status.DONE
    assert not any(e.kind == "tool_result" for e in thread.events)
    assert "use fractions instead" in model.contexts[-1].as_text()


async def test_clarification_round_trip(calculator: ModuleType) -> None:
    model = ScriptedModel(
        [
            intent("request_more_information", message="Add what to 5?"),
            intent("add", a=5, b=9),
            intent("done_for_now", message="14"),
        ]
    )
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(calculator.agent, "add something to 5")
    assert thread.status == Status.AWAITING_HUMAN
    await rt.respond(thread.id, thread.state.human_request or "", "nine")
    thread = await rt.advance(thread.id)
    assert thread.status == Status.DONE
    assert "nine" in model.contexts[1].as_text()


async def test_error_spin_ends_in_escalation(calculator: ModuleType) -> None:
    model = ScriptedModel(
        [
            "the answer is 4",
            '{"intent": "add", "arguments": {"a": "x"}}',
            '{"intent": "sqrt", "arguments": {"x": 16}}',
            "never used",
        ]
    )
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(calculator.agent, "sqrt 16")
    assert thread.status == Status.ESCALATED
    kinds = [e.kind for e in thread.events]
    assert kinds.count("invalid_output") == 3 and kinds[-1] == "escalated"
    assert model.remaining == 1
    assert "unknown tool 'sqrt'" in thread.events[-1].details["last_error"]
