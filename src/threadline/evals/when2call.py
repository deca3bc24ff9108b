"""When2Call: which of four behaviours a move is, and the paper's summary metrics.

When2Call (Ross et al., 2025) sorts a reply to a tool-calling request into four classes:

    tool_call         a function call
    request_for_info  a follow-up question (here: `request_more_information`)
    cannot_answer     a statement that the request cannot be served with these tools
    direct            an answer from the model's own knowledge, no tool, no question

`direct` is never the right answer in the benchmark (its questions need a tool or a missing
value); it is the "answer hallucination" class. A Threadline agent answers and declines
with the same intent, `done_for_now`, so its message decides between the last two: a
message that declines (`is_refusal`) is `cannot_answer`, any other is `direct`. The paper
has a GPT-4 judge classify free text; this is a deterministic keyword rule instead, applied
only to text the model chose to finish with.

An answer that decodes to no intent is `invalid` and a provider failure `error`: neither
is one of the four classes, and both count as wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

__all__ = [
    "WHEN2CALL_CLASSES",
    "classify",
    "is_refusal",
    "macro_f1",
    "when2call_metrics",
]

WHEN2CALL_CLASSES = ("tool_call", "request_for_info", "cannot_answer", "direct")

_REFUSAL = re.compile(
    r"\b(?:"
    r"can\s*not|can[\u2019']?t|unable|not able|sorry|apologi[sz]e|apologies|unfortunately|"
    r"(?:do|does|did)\s*n[o\u2019']?t\s+(?:have|know|support|provide)|"
    r"no (?:tool|function|access|way|information)|"
    r"not (?:possible|available|supported|provided)|"
    r"(?:beyond|outside)(?: of)? (?:my|the)"
    r")\b",
    re.IGNORECASE,
)


def is_refusal(text: str) -> bool:
    """Whether a finishing message declines ("I can't...", "no tool for...", "sorry...")."""
    return bool(_REFUSAL.search(text))


def classify(kind: str, message: str = "") -> str:
    """The When2Call class of a move (its kind and, for `finish`, its message).

    Returns one of `WHEN2CALL_CLASSES`, or `invalid` / `error` for a move that is none.
    """
    match kind:
        case "calls":
            return "tool_call"
        case "ask":
            return "request_for_info"
        case "finish":
            return "cannot_answer" if is_refusal(message) else "direct"
    return kind


def macro_f1(gold: Sequence[str], predicted: Sequence[str]) -> float:
    """Mean F1 over the When2Call classes that occur as gold or as prediction.

    The label set follows scikit-learn's `f1_score(average="macro")`, which the paper's
    harness uses; `invalid` and `error` are not labels (they only lower the recall of their
    gold class).
    """
    labels = [c for c in WHEN2CALL_CLASSES if c in gold or c in predicted]
    if not labels:
        return 0.0
    total = 0.0
    for label in labels:
        tp = sum(1 for g, p in zip(gold, predicted, strict=True) if g == p == label)
        fp = sum(1 for g, p in zip(gold, predicted, strict=True) if p == label != g)
        fn = sum(1 for g, p in zip(gold, predicted, strict=True) if g == label != p)
        total += 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return total / len(labels)


class _Result(Protocol):
    category: str
    predicted: str
    tools_offered: int


def when2call_metrics(results: Iterable[_Result]) -> dict[str, Any]:
    """Accuracy, macro F1 and tool-hallucination rate over When2Call results.

    The tool-hallucination rate is the paper's: of the `cannot_answer` cases that offer no
    tool at all, the share answered with a tool call.
    """
    rows = list(results)
    gold = [r.category for r in rows]
    predicted = [r.predicted for r in rows]
    no_tools = [r for r in rows if r.category == "cannot_answer" and r.tools_offered == 0]
    hallucinated = sum(1 for r in no_tools if r.predicted == "tool_call")
    correct = sum(1 for g, p in zip(gold, predicted, strict=True) if g == p)
    return {
        "n": len(rows),
        "accuracy": round(correct / len(rows), 4) if rows else 0.0,
        "macro_f1": round(macro_f1(gold, predicted), 4),
        "tool_hallucination_rate": round(hallucinated / len(no_tools), 4) if no_tools else None,
        "no_tool_cases": len(no_tools),
    }
