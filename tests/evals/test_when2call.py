"""When2Call: the four classes (direct answers included), the metrics, and a prompt that
does not give the mapping away."""

from __future__ import annotations

import pytest

from threadline.evals import (
    EVAL_SYSTEM_PROMPT,
    build_context,
    classify,
    is_refusal,
    load_when2call,
    macro_f1,
    run_eval,
)
from threadline.models.base import Context
from threadline.testing import FunctionModel


@pytest.mark.parametrize(
    "message, refusal",
    [
        ("Sorry, none of these tools can tell the weather.", True),
        ("I can't look that up with the tools I have.", True),
        ("I cannot do that.", True),
        ("I'm unable to access real-time data.", True),
        ("I don't have a tool for stock prices.", True),
        ("That is not possible with the available functions.", True),
        ("The capital of France is Paris.", False),
        ("It will be sunny in Boston tomorrow, around 21 degrees.", False),
        ("Done: the meeting is booked.", False),
    ],
)
def test_refusals_are_told_from_answers(message, refusal) -> None:
    assert is_refusal(message) is refusal
    assert classify("finish", message) == ("cannot_answer" if refusal else "direct")


def test_every_move_kind_has_a_class() -> None:
    assert classify("calls") == "tool_call"
    assert classify("ask", "Which city?") == "request_for_info"
    assert classify("invalid") == "invalid" and classify("error") == "error"


def test_macro_f1_over_the_classes_that_occur() -> None:
    gold = ["tool_call", "tool_call", "cannot_answer", "request_for_info"]
    predicted = ["tool_call", "direct", "cannot_answer", "invalid"]
    # tool_call 2/3, cannot_answer 1, request_for_info 0, direct 0 (never gold)
    assert macro_f1(gold, predicted) == pytest.approx((2 / 3 + 1 + 0 + 0) / 4)
    assert macro_f1(gold, gold) == 1.0


def test_the_system_prompt_does_not_give_the_mapping_away(data_dir) -> None:
    for intent in ("request_more_information", "done_for_now", "missing", "cannot"):
        assert intent not in EVAL_SYSTEM_PROMPT
    case = load_when2call(data_dir, ("request_for_info",), limit=1)[0]
    context = build_context(case)
    assert context.system == EVAL_SYSTEM_PROMPT
    assert [m.content for m in context.messages] == [case.question]


async def test_direct_answers_are_their_own_class_and_the_metrics(data_dir) -> None:
    cases = load_when2call(data_dir)
    no_tools = [c for c in cases if not c.functions]
    assert len(cases) == 300 and len(no_tools) == 17  # all of them cannot_answer
    assert {c.category for c in no_tools} == {"cannot_answer"}

    def answer(context: Context) -> object:
        functions = [t for t in context.tools if t.name not in HUMAN]
        if not functions:  # no tool: answer from "knowledge" (a hallucinated answer)
            return {"intent": "done_for_now", "arguments": {"message": "It is 21 degrees."}}
        if "?" in context.messages[-1].content:
            return {"intent": "done_for_now", "arguments": {"message": "Sorry, I can't."}}
        return {"intent": functions[0].name, "arguments": {}}

    report = await run_eval(FunctionModel(answer), cases, suite="when2call")
    cannot = report.categories["cannot_answer"]
    assert cannot.predicted["direct"] == 17
    assert sum(cannot.predicted.values()) == cannot.n == 100
    direct = [r for r in report.results if r.predicted == "direct"]
    assert all(not r.correct and r.reason == "chose direct, wanted cannot_answer" for r in direct)
    metrics = report.as_dict(cases=False)["metrics"]
    assert metrics["no_tool_cases"] == 17 and metrics["tool_hallucination_rate"] == 0.0
    correct = sum(s.correct for s in report.categories.values())
    assert metrics["accuracy"] == round(correct / 300, 4)
    gold = [r.category for r in report.results]
    assert metrics["macro_f1"] == round(macro_f1(gold, [r.predicted for r in report.results]), 4)


HUMAN = ("request_more_information", "done_for_now")
