"""Decoding moves, running models over cases, When2Call scoring, and `threadline eval`."""

from __future__ import annotations

import io
import json

import pytest
from typer.testing import CliRunner

from threadline.errors import ModelError
from threadline.evals import (
    build_context,
    load_bfcl,
    load_when2call,
    parse_move,
    run_eval,
    score_case,
)
from threadline.evals.runner import gold_arguments
from threadline.events import RawToolCall
from threadline.models.base import Context, ModelOutput, ToolSpec
from threadline.testing import FunctionModel

TOOLS = (
    ToolSpec(
        "f",
        "",
        {
            "type": "object",
            "properties": {"x": {"type": "integer"}},
            "required": ["x"],
            "additionalProperties": False,
        },
    ),
    ToolSpec("request_more_information", "", {}),
    ToolSpec("done_for_now", "", {}),
)


@pytest.mark.parametrize(
    "output, kind, valid, calls",
    [
        (
            ModelOutput(text='{"intent": "f", "arguments": {"x": 1}}'),
            "calls",
            True,
            [("f", {"x": 1})],
        ),
        (
            ModelOutput(
                text='```json\n[{"intent": "f", "arguments": {"x": 1}}, '
                '{"intent": "f", "x": 2}]\n```'
            ),
            "calls",
            True,
            [("f", {"x": 1}), ("f", {"x": 2})],
        ),
        (
            ModelOutput(tool_calls=(RawToolCall(name="f", arguments='{"x": "1"}'),)),
            "calls",
            False,
            [("f", {"x": "1"})],
        ),
        (ModelOutput(text='{"intent": "g", "arguments": {}}'), "calls", False, [("g", {})]),
        (
            ModelOutput(
                text='{"intent": "request_more_information", "arguments": {"message": "?"}}'
            ),
            "ask",
            True,
            [],
        ),
        (
            ModelOutput(text='{"intent": "done_for_now", "arguments": {"message": "no"}}'),
            "finish",
            True,
            [],
        ),
        (ModelOutput(text="The answer is 4."), "invalid", False, []),
        (ModelOutput(text='{"arguments": {}}'), "invalid", False, []),
        (
            ModelOutput(tool_calls=(RawToolCall(name="f", arguments='{"x": '),)),
            "invalid",
            False,
            [],
        ),
        # a human intent beside a call is one more call, and not schema-valid
        (
            ModelOutput(
                text='[{"intent": "f", "arguments": {"x": 1}}, '
                '{"intent": "done_for_now", "arguments": {"message": "done"}}]'
            ),
            "calls",
            False,
            [("f", {"x": 1}), ("done_for_now", {"message": "done"})],
        ),
        (
            ModelOutput(
                tool_calls=(
                    RawToolCall(name="f", arguments='{"x": 1}'),
                    RawToolCall(name="done_for_now", arguments='{"message": "done"}'),
                )
            ),
            "calls",
            False,
            [("f", {"x": 1}), ("done_for_now", {"message": "done"})],
        ),
        # arguments that are not an object are a format error
        (ModelOutput(text='{"intent": "f", "arguments": "x=1"}'), "invalid", False, []),
        (ModelOutput(text='{"intent": "f", "arguments": [1]}'), "invalid", False, []),
        (ModelOutput(text='{"intent": "f", "arguments": null}'), "invalid", False, []),
        (
            ModelOutput(tool_calls=(RawToolCall(name="f", arguments="[1]"),)),
            "invalid",
            False,
            [],
        ),
        # the list form holds function intents only
        (
            ModelOutput(text='[{"intent": "done_for_now", "arguments": {"message": "no"}}]'),
            "finish",
            False,
            [],
        ),
    ],
)
def test_parse_move(output, kind, valid, calls) -> None:
    move = parse_move(output, TOOLS)
    assert (move.kind, move.valid, list(move.calls)) == (kind, valid, calls)


def test_a_call_with_done_for_now_counts_as_two_calls() -> None:
    fn = {
        "name": "f",
        "parameters": {"type": "dict", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
    }
    truth = [{"f": {"x": [1]}}]
    move = parse_move(
        ModelOutput(
            text='[{"intent": "f", "arguments": {"x": 1}}, '
            '{"intent": "done_for_now", "arguments": {"message": "done"}}]'
        ),
        TOOLS,
    )
    assert score_case("simple_python", [fn], move.calls, truth) == (
        False,
        "wrong number of calls: 2 for 1",
    )
    assert not score_case("irrelevance", [fn], move.calls, [])[0]
    alone = parse_move(ModelOutput(text='{"intent": "f", "arguments": {"x": 1}}'), TOOLS)
    assert score_case("simple_python", [fn], alone.calls, truth) == (True, "")


def test_a_non_object_arguments_is_no_call() -> None:
    move = parse_move(ModelOutput(text='{"intent": "f", "arguments": "x=1"}'), TOOLS)
    assert move.detail == "arguments of f are not an object"
    assert move.calls == ()  # so, as in BFCL, a format error is "no call"


def gold_model() -> FunctionModel:
    """Answers every BFCL case with its gold calls (found via the user message)."""
    answers: dict[str, object] = {}

    def answer(context: Context) -> object:
        return answers[context.messages[-1].content]

    model = FunctionModel(answer, model_id="gold")
    model.answers = answers  # type: ignore[attr-defined]
    return model


async def test_a_gold_model_scores_perfectly_and_the_report_counts(data_dir) -> None:
    cases = load_bfcl(data_dir, "simple_python", 5) + load_bfcl(data_dir, "irrelevance", 3)
    model = gold_model()
    for case in cases:
        text = case.messages[-1]["content"]
        if case.ground_truth:
            name, options = next(iter(case.ground_truth[0].items()))
            model.answers[text] = {"intent": name, "arguments": gold_arguments(options)}
        else:
            model.answers[text] = {"intent": "done_for_now", "arguments": {"message": "no"}}
    seen = []
    report = await run_eval(model, cases, suite="bfcl", on_result=seen.append)
    assert len(seen) == 8
    assert {k: (v.n, v.correct, v.valid) for k, v in report.categories.items()} == {
        "simple_python": (5, 5, 5),
        "irrelevance": (3, 3, 3),
    }
    context = model.contexts[0]
    assert context.tools[0].name == "calculate_triangle_area"
    assert context.tools[0].parameters["properties"]["base"]["type"] == "integer"


async def test_when2call_moves(data_dir) -> None:
    cases = load_when2call(data_dir, limit=2)
    assert [c.category for c in cases].count("cannot_answer") == 2 and len(cases) == 6

    def answer(context: Context) -> object:
        return {"intent": "request_more_information", "arguments": {"message": "which?"}}

    report = await run_eval(FunctionModel(answer), cases, suite="when2call")
    summary = report.categories
    assert summary["request_for_info"].correct == 2
    assert summary["tool_call"].correct == 0 and summary["cannot_answer"].correct == 0
    assert report.as_dict()["categories"]["request_for_info"]["accuracy"] == 1.0
    wrong = next(r for r in report.results if r.category == "tool_call")
    assert wrong.reason == "chose request_for_info, wanted tool_call"


async def test_the_report_table_cuts_no_figure_short_in_an_80_column_terminal(data_dir) -> None:
    """`threadline eval --suite when2call` in 80 columns printed '100.…' and 'cann…': the
    columns fold instead, so every figure and name is there, whole or over more lines, and
    no column is cropped."""
    from rich.console import Console

    from threadline.cli.models import report_table

    def answer(context: Context) -> object:
        return {"intent": "request_more_information", "arguments": {"message": "which?"}}

    report = await run_eval(
        FunctionModel(answer), load_when2call(data_dir, limit=1), suite="when2call"
    )
    for width in (80, 60):
        console = Console(width=width, record=True, file=io.StringIO())
        console.print(report_table(report))
        text = console.export_text()
        assert "…" not in text, text
        table = [line for line in text.splitlines() if line[:1] in "┏┃┡│└"]
        assert all(line.rstrip()[-1] in "┓┃┩│┘" for line in table), text  # none cropped
        assert width < 80 or ("33.3%" in text and "100.0" in text), text


async def test_provider_errors_are_counted_not_raised(data_dir) -> None:
    cases = load_bfcl(data_dir, "simple_python", 2)

    def fail(context: Context) -> object:
        raise ModelError("HTTP 500", retryable=True)

    report = await run_eval(FunctionModel(fail), cases, suite="bfcl")
    assert report.categories["simple_python"].errors == 2
    assert report.categories["simple_python"].correct == 0


def test_context_shape(data_dir) -> None:
    case = load_bfcl(data_dir, "simple_python", 1)[0]
    context = build_context(case)
    assert context.messages[0].role == "user" and "triangle" in context.messages[0].content
    names = [t.name for t in context.tools]
    assert names[-2:] == ["request_more_information", "done_for_now"]
    assert "oneOf" in context.output_schema


def test_cli_eval_json_with_a_scripted_model(data_dir, tmp_path, monkeypatch) -> None:
    from threadline.cli import _register
    from threadline.cli.common import app

    _register()
    answers = tmp_path / "answers.json"
    answers.write_text(
        json.dumps([{"intent": "done_for_now", "arguments": {"message": "none of these fit"}}] * 3)
    )
    monkeypatch.chdir(tmp_path)
    args = [
        "eval",
        "--suite",
        "bfcl",
        "--category",
        "irrelevance",
        "--limit",
        "3",
        "--model",
        f"scripted:{answers}",
        "--data",
        str(data_dir),
    ]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["categories"]["irrelevance"]["accuracy"] == 1.0
    assert len(report["cases"]) == 3

    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0 and "irrelevance" in table.stdout and "100.0%" in table.stdout


def test_cli_eval_skips_cleanly_without_data(tmp_path, monkeypatch) -> None:
    from threadline.cli import _register
    from threadline.cli.common import app

    _register()
    monkeypatch.chdir(tmp_path)  # ../shared/data does not exist from here
    result = CliRunner().invoke(
        app, ["eval", "--suite", "when2call", "--model", "scripted:nothing.json"]
    )
    assert result.exit_code == 0
    assert "skipped" in result.output and "--data" in result.output


def test_cli_eval_bad_arguments(tmp_path) -> None:
    from threadline.cli import _register
    from threadline.cli.common import app

    _register()
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "--no-grammar", "--model", "openai:gpt-4.1-mini"])
    assert result.exit_code == 1 and "local models only" in result.output
    result = runner.invoke(app, ["eval", "--suite", "mmlu", "--data", str(tmp_path)])
    assert result.exit_code == 1 and "unknown suite" in result.output
