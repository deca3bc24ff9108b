"""Run a `Model` over eval cases and score its moves.

Each case becomes one `Context` exactly like an agent's: a fixed system prompt, the case's
messages, the case's functions plus the two human intents (`request_more_information`,
`done_for_now`) as tools, and an output schema that is the union of one intent or a list of
function intents (the same for every category, so the model is never told how many calls
a case wants). The model's answer is decoded the way `threadline.reducer.interpret` reads
answers (native tool calls, or JSON intents as text, optionally fenced) into a `Move`:

    calls     one or more function calls (the BFCL score looks at these); a human intent
              beside a function call is one more call
    ask       request_more_information and no function call
    finish    done_for_now and no function call
    invalid   nothing decodable (not JSON, no "intent", arguments not an object)
    error     the provider failed (ModelError)

A move is *schema-valid* when it decoded and every call names an offered function with
arguments that pass the strict validator; that rate is reported beside accuracy. When2Call
cases are scored by the class of the move (`threadline.evals.when2call`).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..errors import ModelError
from ..models.base import Context, Message, Model, ModelOutput, ToolSpec
from .bfcl import Call, score_case
from .data import HELD_OUT, BfclCase, When2CallCase
from .schema import HUMAN_TOOLS, eval_output_schema, eval_tools, to_json_schema, validate
from .when2call import classify, when2call_metrics

__all__ = [
    "EVAL_SYSTEM_PROMPT",
    "CaseResult",
    "CategorySummary",
    "EvalReport",
    "Move",
    "build_context",
    "gold_arguments",
    "gold_rejections",
    "parse_move",
    "run_eval",
]

EVAL_SYSTEM_PROMPT = (
    "You are a helpful assistant. Choose the next step for the user's request: one of the "
    "tools below, with argument values taken from the request.\n"
    'Answer with JSON only: {"intent": <tool name>, "arguments": {...}}, or a JSON list of '
    "such objects to call several functions at once."
)
"""The system prompt of every case. It names no category and says nothing about which
intent fits which situation: the tools' own descriptions are all the model gets, as in
an agent."""

MoveKind = Literal["calls", "ask", "finish", "invalid", "error"]
Case = BfclCase | When2CallCase


@dataclass(frozen=True, slots=True)
class Move:
    """What the model decided, decoded (see the module docstring)."""

    kind: MoveKind
    calls: tuple[Call, ...] = ()
    valid: bool = False
    detail: str = ""
    message: str = ""
    """The text of an `ask` or `finish` (what the human would read)."""


@dataclass(slots=True)
class CaseResult:
    id: str
    suite: str
    category: str
    correct: bool
    move: MoveKind
    valid: bool
    reason: str = ""
    predicted: str = ""
    """When2Call: the class of the move (`threadline.evals.when2call.classify`)."""
    tools_offered: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: float = 0.0


@dataclass(slots=True)
class CategorySummary:
    category: str
    n: int = 0
    correct: int = 0
    valid: int = 0
    invalid: int = 0
    errors: int = 0
    gold_rejected: int = 0
    held_out: bool = False
    predicted: dict[str, int] = field(default_factory=dict)
    """When2Call: how many moves fell in each class (the paper's response distribution)."""

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def valid_rate(self) -> float:
        return self.valid / self.n if self.n else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "accuracy": round(self.accuracy, 4),
            "valid_rate": round(self.valid_rate, 4),
        }


@dataclass(slots=True)
class EvalReport:
    suite: str
    model: str
    results: list[CaseResult] = field(default_factory=list)
    categories: dict[str, CategorySummary] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self, *, cases: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "suite": self.suite,
            "model": self.model,
            "seconds": round(self.seconds, 2),
            "categories": {k: v.as_dict() for k, v in self.categories.items()},
        }
        if self.suite == "when2call":
            out["metrics"] = when2call_metrics(self.results)
        if cases:
            out["cases"] = [asdict(r) for r in self.results]
        return out


def build_context(case: Case, *, max_output_tokens: int = 512) -> Context:
    """The context one case is asked in (see the module docstring)."""
    tools = eval_tools(case.functions)
    system = EVAL_SYSTEM_PROMPT
    messages: list[Message] = []
    if isinstance(case, BfclCase):
        for m in case.messages:
            if m["role"] == "system":
                system = f"{m['content']}\n\n{system}"
            else:
                role: Literal["user", "assistant"] = (
                    "assistant" if m["role"] == "assistant" else "user"
                )
                messages.append(Message(role, m["content"]))
    else:
        messages.append(Message("user", case.question))
    return Context(
        system=system,
        messages=tuple(messages),
        tools=tools,
        output_schema=eval_output_schema(tools),
        max_output_tokens=max_output_tokens,
        prompt_name=f"eval:{'bfcl' if isinstance(case, BfclCase) else 'when2call'}",
    )


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def parse_move(output: ModelOutput, tools: Sequence[ToolSpec]) -> Move:
    """Decode a model's answer into a `Move` (never raises).

    Arguments that are not a JSON object are a format error (`invalid`). A human intent
    beside a function call is a call too (`[f, done_for_now]` is two calls, and not
    schema-valid: the list form holds function intents only).
    """
    raw, as_list, problem = _decode(output)
    if problem:
        return Move("invalid", detail=problem)
    by_name = {t.name: t for t in tools}
    if any(name not in HUMAN_TOOLS for name, _ in raw):
        valid = True
        for name, args in raw:
            spec = by_name.get(name)
            if name in HUMAN_TOOLS or spec is None or validate(args, spec.parameters):
                valid = False
        return Move("calls", tuple(raw), valid)
    asks = [args for name, args in raw if name == "request_more_information"]
    name, args = ("request_more_information", asks[0]) if asks else raw[0]
    spec = by_name.get(name)
    valid = not as_list and spec is not None and not validate(args, spec.parameters)
    message = args.get("message")
    return Move(
        "ask" if asks else "finish",
        valid=valid,
        message=message if isinstance(message, str) else "",
    )


def _decode(output: ModelOutput) -> tuple[list[Call], bool, str]:
    """(calls, answered as a list, problem): the intents in an answer, or why there are none."""
    raw: list[tuple[str, Any]] = []
    if output.tool_calls:
        for tc in output.tool_calls:
            try:
                args = json.loads(tc.arguments) if tc.arguments.strip() else {}
            except ValueError:
                return [], False, f"arguments of {tc.name} are not JSON"
            raw.append((tc.name, args))
        as_list = len(raw) > 1
    else:
        body = output.text.strip()
        fenced = _FENCE.match(body)
        if fenced:
            body = fenced.group(1)
        try:
            parsed = json.loads(body)
        except ValueError:
            return [], False, "not JSON"
        as_list = isinstance(parsed, list)
        items = parsed if as_list else [parsed]
        if not items:
            return [], as_list, "empty list"
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("intent"), str):
                return [], as_list, 'missing "intent"'
            if "arguments" in item:
                args = item["arguments"]
            else:
                args = {k: v for k, v in item.items() if k != "intent"}
            raw.append((item["intent"], args))
    for name, args in raw:
        if not isinstance(args, dict):
            return [], as_list, f"arguments of {name} are not an object"
    return raw, as_list, ""


def gold_rejections(case: BfclCase) -> int:
    """How many of the case's gold calls the strict validator rejects.

    Each gold call is instantiated with the first acceptable value of every parameter
    (omitting parameters whose only option is "may be omitted").
    """
    by_name = {f["name"]: f for f in case.functions}
    rejected = 0
    for entry in case.ground_truth:
        name, options = next(iter(entry.items()))
        function = by_name.get(name)
        if function is None:
            rejected += 1
            continue
        args = gold_arguments(options)
        schema = to_json_schema(function.get("parameters") or {"type": "dict"})
        if validate(args, schema):
            rejected += 1
    return rejected


def gold_arguments(options: dict[str, list[Any]]) -> dict[str, Any]:
    """One concrete call from a ground-truth entry: the first acceptable value of each
    parameter, recursively for nested dicts (whose values are option lists too);
    parameters whose only option is "may be omitted" are left out."""
    args: dict[str, Any] = {}
    for param, acceptable in options.items():
        chosen = [a for a in acceptable if a != ""]
        if chosen:
            args[param] = _concrete(chosen[0])
    return args


def _concrete(value: Any) -> Any:
    if isinstance(value, dict):
        return gold_arguments(value)
    if isinstance(value, list):
        return [gold_arguments(v) if isinstance(v, dict) else v for v in value]
    return value


def _score(case: Case, move: Move) -> tuple[bool, str]:
    if isinstance(case, BfclCase):
        if move.kind == "error":
            return False, move.detail
        return score_case(case.category, case.functions, move.calls, case.ground_truth)
    predicted = classify(move.kind, move.message)
    ok = predicted == case.category
    return ok, "" if ok else f"chose {predicted}, wanted {case.category}"


async def run_eval(
    model: Model,
    cases: Sequence[Case],
    *,
    suite: str,
    concurrency: int = 1,
    max_output_tokens: int = 512,
    on_result: Callable[[CaseResult], None] | None = None,
) -> EvalReport:
    """Ask `model` every case and score it. Provider failures are scored as errors."""
    report = EvalReport(suite=suite, model=model.model_id)
    for case in cases:
        summary = report.categories.setdefault(case.category, CategorySummary(case.category))
        summary.held_out = case.category in HELD_OUT
        if isinstance(case, BfclCase) and gold_rejections(case):
            summary.gold_rejected += 1
    semaphore = asyncio.Semaphore(max(1, concurrency))
    started = time.perf_counter()

    async def one(case: Case) -> CaseResult:
        context = build_context(case, max_output_tokens=max_output_tokens)
        async with semaphore:
            output: ModelOutput | None = None
            try:
                output = await model.request(context)
            except ModelError as exc:
                move = Move("error", detail=str(exc)[:300])
            else:
                move = parse_move(output, context.tools)
        correct, reason = _score(case, move)
        result = CaseResult(
            id=case.id,
            suite=suite,
            category=case.category,
            correct=correct,
            move=move.kind,
            valid=move.valid,
            reason=reason or move.detail,
            predicted=classify(move.kind, move.message) if isinstance(case, When2CallCase) else "",
            tools_offered=len(case.functions),
            calls=[{"name": n, "arguments": a} for n, a in move.calls],
            input_tokens=output.input_tokens if output else 0,
            output_tokens=output.output_tokens if output else 0,
            latency_ms=output.latency_ms if output else 0.0,
        )
        summary = report.categories[case.category]
        summary.n += 1
        summary.correct += correct
        summary.valid += move.valid
        summary.invalid += move.kind == "invalid"
        summary.errors += move.kind == "error"
        if result.predicted:
            summary.predicted[result.predicted] = summary.predicted.get(result.predicted, 0) + 1
        if on_result is not None:
            on_result(result)
        return result

    report.results = list(await asyncio.gather(*(one(c) for c in cases)))
    report.seconds = time.perf_counter() - started
    return report
