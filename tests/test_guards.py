"""Dispatch guards (issue 13): policy functions and an LLM judge rule on every validated
call before it is dispatched; verdicts are events, replay never asks a guard again."""

from __future__ import annotations

import json
from typing import Any

import pytest

from guard_support import ARCHIVED, DROPPED, archive_table, drop_table
from threadline import (
    Agent,
    Guard,
    GuardCall,
    GuardDecision,
    Judge,
    MemoryStore,
    ModelError,
    Runtime,
    SQLiteStore,
    Status,
    replay_thread,
    tool,
)
from threadline.cli.display import format_event
from threadline.events import GuardVerdict, summarize
from threadline.guards import allow, block, require_approval
from threadline.judge import parse_verdict
from threadline.models.base import Context
from threadline.testing import FunctionModel, ScriptedModel, intent
from threadline.wire import thread_out


@tool
def count_rows(table: str) -> int:
    """Count the rows of a table.

    Args:
        table: the table
    """
    return 42


@pytest.fixture(autouse=True)
def _clean() -> None:
    DROPPED.clear()
    ARCHIVED.clear()


BLOCK_REASON = "dropping is irreversible; archive the table instead"


def judge_answer(context: Context) -> str:
    """A judge model: blocks destructive calls, allows the rest (reads the call as data)."""
    call = json.loads(context.messages[-1].content.split("\n", 1)[1])
    if call["tool"] == "drop_table":
        return json.dumps({"verdict": "block", "reason": BLOCK_REASON})
    return json.dumps({"verdict": "allow", "reason": "reversible"})


def ops_model() -> FunctionModel:
    """The main model: drops the table, unless its context shows that a guard blocked
    that (then it archives); finishes once a table is archived."""

    def answer(context: Context) -> dict[str, Any]:
        text = context.as_text()
        if "archived orders_2019" in text:
            return intent("done_for_now", message="archived orders_2019")
        if BLOCK_REASON in text:
            return intent("archive_table", table="orders_2019")
        return intent("drop_table", table="orders_2019")

    return FunctionModel(answer, model_id="ops")


def ops_agent(*guards: Any, **kwargs: Any) -> Agent:
    return Agent("ops", tools=[drop_table, archive_table, count_rows], guards=guards, **kwargs)


class RaisingModel:
    """A judge that must never be asked (replay, fork)."""

    model_id = "never"
    profile = FunctionModel(judge_answer).profile

    async def request(self, context: Context) -> Any:
        raise AssertionError("the judge was asked again")


async def test_a_judge_blocks_a_destructive_call_and_the_model_changes_its_intent() -> None:
    judge_model = FunctionModel(judge_answer, model_id="judge-model")
    agent = ops_agent(Judge(judge_model, policy="Never lose data."))
    store = SQLiteStore(":memory:")
    rt = Runtime(store, model=ops_model())
    thread = await rt.launch(agent, "clean up the old orders table orders_2019")
    assert thread.status == Status.DONE, thread.events[-1]
    assert DROPPED == [] and ARCHIVED == ["orders_2019"]
    verdicts = [e for e in thread.events if isinstance(e, GuardVerdict)]
    assert [(v.tool, v.verdict) for v in verdicts] == [
        ("drop_table", "block"),
        ("archive_table", "allow"),
    ]
    blocked = verdicts[0]
    assert blocked.reason == BLOCK_REASON and blocked.guard == "judge"
    assert blocked.model == "judge-model" and blocked.prompt_name == "dispatch-judge"
    assert blocked.prompt_hash and json.loads(blocked.output)["verdict"] == "block"
    # the judge was sent its template and the call as data, and nothing else
    first = judge_model.contexts[0]
    assert "Never lose data." in first.system and first.output_schema["required"]
    assert json.loads(first.messages[0].content.split("\n", 1)[1])["arguments"] == {
        "table": "orders_2019"
    }
    # the blocked call never ran and the thread went on: the block is the call's end
    loaded = await store.load(thread.id)
    assert loaded.status == Status.DONE and not loaded.state.pending

    # replay and fork re-derive from the record: a judge that raises is never asked
    silent = ops_agent(Judge(RaisingModel()))  # type: ignore[arg-type]
    derived = replay_thread(silent, loaded)
    assert [e.kind for e in derived.events] == [e.kind for e in loaded.events]
    rt2 = Runtime(store, agents=[silent], model=ops_model())
    at = next(e.seq for e in loaded.events if e.kind == "tool_started")
    fork = await rt2.fork(thread.id, at=at - 1)  # after the archive's verdict
    fork = await rt2.advance(fork.id)
    assert fork.status == Status.DONE and ARCHIVED == ["orders_2019"] * 2


async def test_the_block_reason_reaches_the_model_in_both_formats() -> None:
    from threadline import ContextSettings

    for fmt in ("compact", "messages"):
        model = ScriptedModel(
            [intent("drop_table", table="t"), intent("done_for_now", message="gave up")]
        )
        agent = ops_agent(
            lambda call: block("no dropping on Fridays"),
            context=ContextSettings(format=fmt),
        )
        thread = await Runtime(MemoryStore(), model=model).launch(agent, "drop t")
        assert thread.status == Status.DONE and DROPPED == []
        seen = model.contexts[1]
        assert "no dropping on Fridays" in seen.as_text(), fmt
        if fmt == "messages":  # the blocked call is answered: chat APIs require it
            (answer,) = [m for m in seen.messages if m.role == "tool"]
            assert "blocked by" in answer.content and "Fridays" in answer.content


async def test_a_guard_can_require_approval_for_a_call_that_never_asks() -> None:
    def big_counts(call: GuardCall) -> GuardDecision:
        if call.tool == "count_rows" and call.arguments["table"].startswith("prod_"):
            return require_approval("counting a production table locks it")
        return allow()

    model = ScriptedModel(
        [intent("count_rows", table="prod_users"), intent("done_for_now", message="42")]
    )
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(ops_agent(big_counts), "how many users?")
    assert thread.status == Status.AWAITING_APPROVAL
    view = thread_out(thread)
    (card,) = view.pending_approvals
    assert card.tool == "count_rows"
    assert card.guard == "big_counts: counting a production table locks it"
    await rt.approve(thread.id, card.call_id, approved=True, by="ana")
    thread = await rt.advance(thread.id)
    assert thread.status == Status.DONE
    replay_thread(ops_agent(big_counts), thread)


async def test_guards_run_in_order_and_the_first_block_ends_the_checks() -> None:
    asked: list[str] = []

    def first(call: GuardCall) -> GuardDecision:
        asked.append("first")
        return require_approval("maybe")

    def second(call: GuardCall) -> GuardDecision:
        asked.append("second")
        return block("no")

    def third(call: GuardCall) -> GuardDecision:
        asked.append("third")
        return allow()

    model = ScriptedModel([intent("drop_table", table="t"), intent("done_for_now", message="ok")])
    thread = await Runtime(MemoryStore(), model=model).launch(
        ops_agent(first, second, third), "drop t"
    )
    assert asked == ["first", "second"] and thread.status == Status.DONE
    kinds = [(e.guard, e.verdict) for e in thread.events if isinstance(e, GuardVerdict)]
    assert kinds == [("first", "require_approval"), ("second", "block")]


async def test_parallel_calls_are_each_judged_in_call_order() -> None:
    def no_drops(call: GuardCall) -> GuardDecision:
        return block("never drop") if call.tool == "drop_table" else allow()

    model = ScriptedModel(
        [
            [
                intent("count_rows", table="a"),
                intent("drop_table", table="b"),
                intent("archive_table", table="c"),
            ],
            intent("done_for_now", message="ok"),
        ]
    )
    agent = ops_agent(Guard(no_drops, name="policy"))
    thread = await Runtime(MemoryStore(), model=model).launch(agent, "tidy up")
    assert thread.status == Status.DONE
    verdicts = [e for e in thread.events if isinstance(e, GuardVerdict)]
    assert [(v.call_id, v.verdict) for v in verdicts] == [
        ("c2.0", "allow"),
        ("c2.1", "block"),
        ("c2.2", "allow"),
    ]
    assert DROPPED == [] and ARCHIVED == ["c"]
    assert verdicts[0].seq < min(e.seq for e in thread.events if e.kind == "tool_result")
    replay_thread(agent, thread)


async def test_a_guard_that_only_looks_at_some_tools() -> None:
    seen: list[str] = []

    def watch(call: GuardCall) -> GuardDecision:
        seen.append(call.tool)
        return allow()

    model = ScriptedModel(
        [[intent("count_rows", table="a"), intent("archive_table", table="b")], "done?"]
    )
    agent = ops_agent(Guard(watch, tools=["archive_table"]), max_consecutive_errors=1)
    await Runtime(MemoryStore(), model=model).launch(agent, "go")
    assert seen == ["archive_table"]  # and never done_for_now or request_more_information


@pytest.mark.parametrize(
    ("policy", "status", "dropped"),
    [
        ("block", Status.DONE, []),
        ("require_approval", Status.AWAITING_APPROVAL, []),
        ("allow", Status.DONE, ["t"]),
    ],
)
@pytest.mark.parametrize(
    "failure",
    [
        ModelError("provider down", retryable=True),
        "not a verdict at all",
        json.dumps({"verdict": "maybe", "reason": "?"}),
        json.dumps({"verdict": "block", "reason": 7}),
    ],
)
async def test_a_failing_judge_follows_the_agent_s_policy(
    policy: str, status: Status, dropped: list[str], failure: Any
) -> None:
    judge = Judge(ScriptedModel([failure], model_id="flaky-judge"))
    agent = ops_agent(judge, guard_failure=policy)
    model = ScriptedModel([intent("drop_table", table="t"), intent("done_for_now", message="ok")])
    thread = await Runtime(SQLiteStore(":memory:"), model=model).launch(agent, "drop t")
    assert thread.status == status and dropped == DROPPED
    (verdict,) = [e for e in thread.events if isinstance(e, GuardVerdict)]
    assert verdict.failed and verdict.verdict == policy
    assert "guard judge failed" in verdict.reason
    if not isinstance(failure, ModelError):
        assert verdict.output == failure and verdict.model == "flaky-judge"
    assert thread.status != Status.RUNNING


async def test_a_judge_that_times_out_fails_closed() -> None:
    judge = Judge(ScriptedModel(["{}"], delay=5), timeout=0.05)
    model = ScriptedModel([intent("drop_table", table="t"), intent("done_for_now", message="ok")])
    thread = await Runtime(MemoryStore(), model=model).launch(ops_agent(judge), "drop t")
    (verdict,) = [e for e in thread.events if isinstance(e, GuardVerdict)]
    assert verdict.verdict == "block" and "no verdict within 0.05s" in verdict.reason
    assert thread.status == Status.DONE and DROPPED == []


async def test_a_guard_function_that_raises_or_returns_nonsense_fails_closed() -> None:
    def broken(call: GuardCall) -> GuardDecision:
        raise KeyError("limits table")

    def sloppy(call: GuardCall) -> Any:
        return True

    for guard, text in ((broken, "KeyError"), (sloppy, "not a GuardDecision")):
        model = ScriptedModel(
            [intent("drop_table", table="t"), intent("done_for_now", message="ok")]
        )
        thread = await Runtime(MemoryStore(), model=model).launch(ops_agent(guard), "drop t")
        (verdict,) = [e for e in thread.events if isinstance(e, GuardVerdict)]
        assert verdict.failed and verdict.verdict == "block" and text in verdict.reason
        assert DROPPED == []


async def test_a_model_that_keeps_proposing_blocked_calls_escalates() -> None:
    model = ScriptedModel([intent("drop_table", table=f"t{i}") for i in range(6)])
    agent = ops_agent(lambda call: block("no"), max_repeated_calls=0)
    thread = await Runtime(MemoryStore(), model=model).launch(agent, "drop everything")
    assert thread.status == Status.ESCALATED and len(model.contexts) == 3
    assert "blocked by <lambda>: no" in thread.events[-1].details["last_error"]


async def test_guards_judge_sub_agent_calls() -> None:
    worker = Agent("archiver", tools=[archive_table])
    boss = Agent(
        "boss",
        tools=[worker.as_tool()],
        guards=[
            lambda call: block("ask finance first") if "ledger" in str(call.arguments) else allow()
        ],
    )
    model = ScriptedModel(
        [
            intent("archiver", task="archive the ledger"),
            intent("done_for_now", message="could not"),
        ]
    )
    thread = await Runtime(MemoryStore(), model=model).launch(boss, "archive the ledger")
    assert thread.status == Status.DONE
    assert [e.kind for e in thread.events].count("child_started") == 0
    (verdict,) = [e for e in thread.events if isinstance(e, GuardVerdict)]
    assert verdict.tool == "archiver" and verdict.verdict == "block"


def test_verdicts_render_for_people_with_hostile_reasons_escaped() -> None:
    from datetime import UTC, datetime

    event = GuardVerdict(
        seq=3,
        at=datetime(2024, 1, 1, tzinfo=UTC),
        call_id="c2",
        tool="drop_table",
        guard="judge",
        verdict="block",
        reason="[bold red]<script>alert(1)</script>",
    )
    assert "\\[bold red]" in format_event(event)  # Rich markup in the reason is escaped
    assert summarize(event).text.startswith("judge: block drop_table [c2]")


def test_parse_verdict() -> None:
    assert parse_verdict('```json\n{"verdict": "allow", "reason": ""}\n```').verdict == "allow"
    assert parse_verdict('{"verdict": "block", "reason": ""}').reason  # a block says why
    with pytest.raises(Exception, match="not one of"):
        parse_verdict('{"verdict": "yes"}')
