"""decide() and interpret() as pure functions."""

from __future__ import annotations

import ast
import builtins
import json
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threadline import Agent, Thread, tool
from threadline.events import (
    Approval,
    ApprovalRequested,
    HumanRequest,
    InvalidOutput,
    ModelCall,
    ModelError,
    RawToolCall,
    ToolAttemptFailed,
    ToolCall,
    ToolError,
    ToolResult,
    ToolStarted,
    UserMessage,
)
from threadline.reducer import (
    AwaitApproval,
    AwaitHuman,
    CallIdIndex,
    CallModel,
    Escalate,
    Finish,
    RunTool,
    Wait,
    call_ids,
    decide,
    interpret,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@tool
def add(a: int, b: int) -> int:
    """Add."""
    return a + b


@tool(approval="always", side_effects=True)
def charge(amount: float) -> str:
    """Charge a card (not idempotent)."""
    return "ok"


@tool(side_effects=True, idempotent=True)
def upsert(key: str) -> str:
    """Idempotent write."""
    return key


AGENT = Agent("t", tools=[add, charge, upsert], max_steps=3, max_consecutive_errors=3)


def thread_of(*events: object) -> Thread:
    t = Thread("th_r", "t")
    for i, e in enumerate(events):
        t.append(e.model_copy(update={"seq": i}))  # type: ignore[attr-defined]
    return t


def um(text: str = "hi") -> UserMessage:
    return UserMessage(seq=0, at=T0, text=text)


def call(tool_name: str, cid: str = "c1", **args: object) -> ToolCall:
    return ToolCall(seq=0, at=T0, call_id=cid, tool=tool_name, version="1", arguments=args)


def test_empty_thread_waits_and_a_message_calls_the_model() -> None:
    assert isinstance(decide(AGENT, Thread("th", "t")), Wait)
    assert decide(AGENT, thread_of(um())) == CallModel()


def test_validated_call_runs_and_approval_pauses() -> None:
    step = decide(AGENT, thread_of(um(), call("add", a=1, b=2)))
    assert isinstance(step, RunTool) and step.call.tool == "add" and step.attempt == 1
    step = decide(AGENT, thread_of(um(), call("charge", amount=5)))
    assert isinstance(step, AwaitApproval) and step.call.call_id == "c1"
    waiting = thread_of(
        um(),
        call("charge", amount=5),
        ApprovalRequested(seq=0, at=T0, call_id="c1", tool="charge", arguments={"amount": 5}),
    )
    assert decide(AGENT, waiting) == Wait(waiting.status)
    approved = thread_of(*waiting.events, Approval(seq=0, at=T0, call_id="c1", approved=True))
    assert isinstance(decide(AGENT, approved), RunTool)
    rejected = thread_of(
        *waiting.events, Approval(seq=0, at=T0, call_id="c1", approved=False, comment="too much")
    )
    assert decide(AGENT, rejected) == CallModel()


def test_human_intents_ask_and_finish() -> None:
    step = decide(AGENT, thread_of(um(), call("request_more_information", message="which?")))
    assert step == AwaitHuman("c1", "which?")
    asked = thread_of(
        um(),
        call("request_more_information", message="which?"),
        HumanRequest(seq=0, at=T0, request_id="c1", question="which?"),
    )
    assert isinstance(decide(AGENT, asked), Wait)
    assert decide(AGENT, thread_of(um(), call("done_for_now", message="bye"))) == Finish(
        "bye", "c1"
    )


def test_consecutive_errors_escalate_and_success_resets() -> None:
    bad = InvalidOutput(seq=0, at=T0, reason="not JSON")
    err = ToolError(seq=0, at=T0, call_id="c1", tool="add", error_type="E", message="boom")
    two = thread_of(um(), bad, call("add", a=1, b=1), err)
    assert decide(AGENT, two) == CallModel()
    three = thread_of(
        *two.events, ModelError(seq=0, at=T0, model="m", error_type="X", message="503")
    )
    step = decide(AGENT, three)
    assert isinstance(step, Escalate) and "3 consecutive errors" in step.reason
    reset = thread_of(
        um(),
        bad,
        bad,
        call("add", a=1, b=1),
        ToolResult(seq=0, at=T0, call_id="c1", tool="add", result=2),
        bad,
    )
    assert decide(AGENT, reset) == CallModel()


def test_step_limit_escalates() -> None:
    mc = ModelCall(seq=0, at=T0, model="m")
    events: list[object] = [um()]
    for i in range(3):
        events += [
            mc,
            call("add", cid=f"c{i}", a=1, b=1),
            ToolResult(seq=0, at=T0, call_id=f"c{i}", tool="add", result=2),
        ]
    step = decide(AGENT, thread_of(*events))
    assert isinstance(step, Escalate) and "step limit" in step.reason
    assert decide(AGENT, thread_of(*events, um("more"))) == CallModel()


def test_started_without_outcome_reruns_idempotent_and_escalates_the_rest() -> None:
    started = ToolStarted(seq=0, at=T0, call_id="c1", idempotency_key="k", attempt=1)
    step = decide(AGENT, thread_of(um(), call("upsert", key="x"), started))
    assert isinstance(step, RunTool) and step.attempt == 2
    charged = thread_of(
        um(), call("charge", amount=3), Approval(seq=0, at=T0, call_id="c1", approved=True), started
    )
    step = decide(AGENT, charged)
    assert isinstance(step, Escalate) and "may have run" in step.reason
    assert step.details["idempotency_key"] == "k"


def test_a_repeated_write_ahead_is_the_same_attempt_never_a_retry() -> None:
    """A thread stored before stores refused repeated `tool_started` records may hold one:
    attempt 2 of the charge may have run, and a stale copy of attempt 1 after it must not
    make it look failed (which would run the charge again instead of escalating)."""
    approved = Approval(seq=0, at=T0, call_id="c1", approved=True)
    first = ToolStarted(seq=0, at=T0, call_id="c1", idempotency_key="k", attempt=1)
    failed = ToolAttemptFailed(
        seq=0,
        at=T0,
        call_id="c1",
        tool="charge",
        attempt=1,
        error_type="E",
        message="m",
        retry_at=T0,
    )
    second = first.model_copy(update={"attempt": 2})
    thread = thread_of(um(), call("charge", amount=3), approved, first, failed, second, first)
    assert thread.state.pending["c1"].attempt == 2
    step = decide(AGENT, thread)
    assert isinstance(step, Escalate) and step.details["attempt"] == 2
    twice = thread_of(um(), call("upsert", key="x"), first, first)
    step = decide(AGENT, twice)
    assert isinstance(step, RunTool) and step.attempt == 2  # as after one `tool_started`


def test_removed_tool_escalates_instead_of_guessing() -> None:
    t = thread_of(um(), ToolCall(seq=0, at=T0, call_id="c1", tool="add", version="9", arguments={}))
    assert isinstance(decide(AGENT, t), Escalate)


# -- interpret -------------------------------------------------------------------------------


def _interp(text: str = "", calls: tuple[RawToolCall, ...] = ()) -> list[object]:
    return interpret(AGENT, text, calls, seq=5, at=T0)  # type: ignore[return-value]


@pytest.mark.parametrize(
    "text",
    [
        '{"intent": "add", "arguments": {"a": 1, "b": 2}}',
        '{"intent": "add", "a": 1, "b": 2}',
        '```json\n{"intent": "add", "arguments": {"a": 1, "b": 2}}\n```',
    ],
)
def test_interpret_accepts_the_intent_forms(text: str) -> None:
    (event,) = _interp(text)
    assert isinstance(event, ToolCall)
    assert (event.seq, event.call_id, event.tool, event.arguments) == (
        5,
        "c5",
        "add",
        {"a": 1, "b": 2},
    )


def test_interpret_native_and_parallel_calls() -> None:
    events = _interp(
        calls=(
            RawToolCall(id="call_A", name="add", arguments='{"a":1,"b":2}'),
            RawToolCall(id="call_B", name="upsert", arguments='{"key":"k"}'),
        )
    )
    assert [(e.seq, e.call_id) for e in events] == [(5, "call_A"), (6, "call_B")]  # type: ignore[attr-defined]
    events = _interp(
        '[{"intent":"add","arguments":{"a":1,"b":2}},{"intent":"add","arguments":{"a":3,"b":4}}]'
    )
    assert [e.call_id for e in events] == ["c5.0", "c5.1"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "calls", "fragment"),
    [
        ("I think the answer is 3", (), "not valid JSON"),
        ("", (), "empty"),
        ('{"arguments": {}}', (), '"intent"'),
        ('{"intent": "launch_missiles", "arguments": {}}', (), "unknown tool 'launch_missiles'"),
        (
            '{"intent": "add", "arguments": {"a": "one", "b": 2}}',
            (),
            "invalid arguments for add: a",
        ),
        ('{"intent": "add", "arguments": [1, 2]}', (), "must be a JSON object"),
        ("", (RawToolCall(id="x", name="add", arguments='{"a": 1,'),), "not valid JSON"),
        ("", (RawToolCall(id="x", name="nope", arguments="{}"),), "unknown tool"),
        ('[{"intent": "add", "arguments": {"a": 1, "b": 2}}, {"intent": "zap"}]', (), "unknown"),
    ],
)
def test_interpret_turns_bad_output_into_one_short_reason(
    text: str, calls: tuple[RawToolCall, ...], fragment: str
) -> None:
    (event,) = _interp(text, calls)
    assert isinstance(event, InvalidOutput) and event.seq == 5
    assert fragment in event.reason
    assert len(event.reason) < 400 and "Traceback" not in event.reason


# -- purity ----------------------------------------------------------------------------------

_NOT_FOR_DECIDE = (
    "threadline.stores",
    "threadline.models",
    "threadline.runtime",
    "threadline.server",
    "httpx",
    "sqlite3",
    "socket",
    "urllib",
    "http",
    "openai",
    "anthropic",
    "psycopg",
)


def _module_imports(path: Path, name: str = "threadline.") -> set[str]:
    """Module-level imports of a threadline module (TYPE_CHECKING blocks excluded)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        stack: list[ast.AST] = [node]
        while stack:
            sub = stack.pop()
            if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
                continue  # imports inside functions run only when called, not by decide
            stack.extend(ast.iter_child_nodes(sub))
            if isinstance(sub, ast.Import):
                found.update(a.name for a in sub.names)
            elif isinstance(sub, ast.ImportFrom):
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                parent = ".".join(package[: len(package) - sub.level + 1]) + "."
                base = parent + (sub.module or "") if sub.level else (sub.module or "")
                found.add(base.rstrip("."))
    return found


def test_decide_imports_nothing_from_stores_models_or_the_network() -> None:
    src = Path(__file__).resolve().parent.parent / "src" / "threadline"
    todo, seen = ["threadline.reducer"], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = src / (name.removeprefix("threadline.").replace(".", "/") + ".py")
        if not path.exists():
            path = path.with_suffix("") / "__init__.py"  # a package
        if not path.exists():
            continue
        for imported in _module_imports(path, name):
            assert not imported.startswith(_NOT_FOR_DECIDE), f"{name} imports {imported}"
            if imported.startswith("threadline."):
                todo.append(imported)
    assert {"threadline.events", "threadline.tools", "threadline.agent"} <= seen


@given(st.lists(st.sampled_from(["ok", "bad", "err", "call", "mc", "msg"]), max_size=25))
@settings(max_examples=150, deadline=None)
def test_decide_is_pure_and_does_no_io(ops: list[str]) -> None:
    events: list[object] = [um()]
    for op in ops:
        n = len(events)
        if op == "bad":
            events.append(InvalidOutput(seq=n, at=T0, reason="x"))
        elif op == "err":
            events.append(ModelError(seq=n, at=T0, model="m", error_type="E", message="x"))
        elif op == "call":
            events.append(
                ToolCall(
                    seq=n,
                    at=T0,
                    call_id=f"c{n}",
                    tool="add",
                    version="1",
                    arguments={"a": 1, "b": 1},
                )
            )
            events.append(ToolResult(seq=n + 1, at=T0, call_id=f"c{n}", tool="add", result=2))
        elif op == "mc":
            events.append(ModelCall(seq=n, at=T0, model="m"))
        elif op == "msg":
            events.append(UserMessage(seq=n, at=T0, text="more"))
    thread = Thread("th_h", "t", events)  # type: ignore[arg-type]
    before = json.dumps(thread.to_dict())
    state_before = thread.state.to_dict()

    def forbidden(*a: object, **k: object) -> None:
        raise AssertionError("decide did I/O or read the clock")

    saved = (builtins.open, socket.socket, time.time, time.monotonic)
    builtins.open, socket.socket, time.time, time.monotonic = (  # type: ignore[assignment,misc]
        forbidden,
        forbidden,
        forbidden,
        forbidden,
    )
    try:
        first = decide(AGENT, thread)
        second = decide(AGENT, thread)
    finally:
        builtins.open, socket.socket, time.time, time.monotonic = saved  # type: ignore[misc]
    assert first == second
    assert json.dumps(thread.to_dict()) == before and thread.state.to_dict() == state_before
    if thread.state.consecutive_errors >= AGENT.max_consecutive_errors:
        assert isinstance(first, Escalate)


def test_the_call_id_index_follows_the_thread_and_restarts_for_another() -> None:
    def call(thread: Thread, cid: str) -> None:
        thread.append(
            ToolCall(seq=thread.next_seq, at=T0, call_id=cid, tool="t", version="1", arguments={})
        )

    index = CallIdIndex(maxsize=2)
    thread = Thread("t1", "a", [UserMessage(seq=0, at=T0, text="go")])
    call(thread, "x")
    assert set(index.taken(thread)) == call_ids(thread) == {"x"}
    call(thread, "y")  # extended by the new event only
    assert set(index.taken(thread)) == call_ids(thread) == {"x", "y"}
    other = Thread("t1", "a", [UserMessage(seq=0, at=T0, text="another thread, same id")])
    call(other, "z")
    assert set(index.taken(other)) == {"z"}  # not the first thread's ids
    for n in range(3):  # bounded: the oldest thread is dropped, and recounted when seen again
        index.taken(Thread(f"u{n}", "a"))
    assert set(index.taken(other)) == {"z"}
