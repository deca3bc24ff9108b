"""Incremental rendering equals the full plan, byte for byte: on the 200 recorded airline
runs (rendered before every model call, as the runtime does, with and without a budget
that compacts) and on random event sequences; and it is what the renderer actually used."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from context_support import TAU, fetch, tau_runs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from threadline import Agent, ContextSettings, Tool
from threadline.context.base import Rendered
from threadline.context.messages import thread_from_openai
from threadline.context.renderer import Renderer
from threadline.errors import TokenBudgetError
from threadline.events import (
    Compacted,
    Event,
    HumanResponse,
    InvalidOutput,
    ModelCall,
    RawToolCall,
    Thread,
    ToolCall,
    ToolError,
    ToolResult,
    ToolStarted,
    UserMessage,
)
from threadline.prompts import renderer_for

AT = datetime(2024, 1, 1, tzinfo=UTC)
COMPACTIONS = [0]  # compactions stored by `_replay` (a budget that compacts was exercised)
LEVEL_1 = [0]  # renders at detail level 1 (older results cut) that were extensions


def _pair(agent: Agent) -> tuple[Renderer, Renderer]:
    """(the agent's renderer, incremental; a full-plan renderer of the same agent)."""
    incremental = renderer_for(agent)
    full = renderer_for(agent)
    full._tails = None  # the non-incremental path: every render plans from the window
    return incremental, full


def _same(a: Rendered, b: Rendered) -> None:
    assert a.context == b.context
    assert a.layout == b.layout
    assert a.sections == b.sections
    assert a.compaction == b.compaction


def _replay(events: list[Event], incremental: Renderer, full: Renderer, tid: str) -> int:
    """Append `events` one by one; before every model call render with both renderers,
    compare, and store the compaction the rendering asks for (as `Runtime` does).
    Returns how many renders were compared."""
    thread = Thread(tid, "agent")
    compared = 0
    sent: list[tuple[str, int]] = []  # the previous call's compact body and settled prefix

    def render_now() -> None:
        nonlocal compared
        tails = incremental._tails
        before = tails.extended if tails is not None else 0
        try:
            a = incremental.render(thread)
        except TokenBudgetError as exc:
            with pytest.raises(TokenBudgetError) as info:
                full.render(thread)
            assert (info.value.needed, info.value.available) == (exc.needed, exc.available)
            return
        _same(a, full.render(thread))
        compared += 1
        body = a.context.messages[-1].content if a.context.messages else ""
        cut = a.context.cached_prefix
        if sent and cut:  # the read mark is where the previous call wrote, and was sent it
            previous, written = sent[-1]
            assert cut in (len(previous), written), f"cached_prefix {cut}: no mark there"
            assert body[:cut] == previous[:cut], f"cached_prefix {cut} overstates the prefix"
        settled = a.context.settled_prefix  # ends where a block does
        assert settled in (0, len(body)) or body[settled : settled + 2] == "\n<"
        sent[:] = [(body, a.context.settled_prefix)]
        if a.layout.level > 1 or a.layout.compact is not None:
            # A new compaction is never an extension: it falls back to the full plan
            # (compared above), whose summary starts the next run of extensions.
            assert tails is None or tails.extended == before
        elif a.layout.level == 1 and tails is not None and tails.extended > before:
            LEVEL_1[0] += 1  # older results cut, extended from the previous rendering
        if a.compaction is not None:
            COMPACTIONS[0] += 1
            lo, hi, text = a.compaction
            thread.append(
                Compacted(seq=thread.next_seq, at=AT, from_seq=lo, to_seq=hi, summary=text)
            )

    for e in events:
        if isinstance(e, ModelCall) and len(thread):
            render_now()
        thread.append(e.model_copy(update={"seq": thread.next_seq}))
    render_now()
    return compared


def _airline_agent(policy: str, **settings: Any) -> Agent:
    tools = json.loads((TAU / "tools.json").read_text())
    return Agent(
        "airline",
        tools=[
            Tool.from_json_schema(
                t["function"]["name"],
                t["function"]["parameters"],
                description=t["function"]["description"],
            )
            for t in tools
        ],
        instructions=policy,
        context=ContextSettings(tokenizer="o200k_base", **settings),
    )


def test_the_airline_runs_render_the_same_incrementally() -> None:
    runs = tau_runs()
    compared = 0
    COMPACTIONS[0] = 0
    for native, window in ((False, None), (True, 6_000)):
        pairs: dict[str, tuple[Renderer, Renderer]] = {}
        for n, run in enumerate(runs):
            policy, thread = thread_from_openai(run["traj"], thread_id=f"run{n}")
            if policy not in pairs:
                extra = {"context_window": window} if window else {}
                pairs[policy] = _pair(_airline_agent(policy, native_tools=native, **extra))
            incremental, full = pairs[policy]
            compared += _replay(list(thread.events), incremental, full, f"{native}-{window}-{n}")
        extended = sum(p[0]._tails.extended for p in pairs.values())  # type: ignore[union-attr]
        assert extended > len(runs)  # most renders were extensions, not full plans
    assert compared > 3_000
    assert COMPACTIONS[0] > 100  # the 6k window compacts: full plans and reseeds in between


def _fetch_agent(**settings: Any) -> Agent:
    """An agent with the one `fetch` tool, keeping the newest 4 events when reducing."""
    return Agent(
        "agent",
        tools=[fetch],
        instructions="Fetch what is asked.",
        context=ContextSettings(keep_recent=4, **settings),
    )


def _events(steps: list[tuple[str, int]]) -> list[Event]:
    """A thread's events from drawn steps (seq numbers are given on replay)."""
    out: list[Event] = [UserMessage(seq=0, at=AT, text="Fetch the records, one by one.")]
    for n, (kind, size) in enumerate(steps):
        cid = f"c{n}"
        if kind == "user":
            out.append(UserMessage(seq=0, at=AT, text=f"also record {size} " * (size % 7 + 1)))
            continue
        if kind == "human":
            out.append(HumanResponse(seq=0, at=AT, request_id=f"r{n}", text="yes " * size))
            continue
        text = "Let me look." if kind == "talk" else ""
        raw = (RawToolCall(id=cid, name="fetch", arguments=json.dumps({"key": f"k{n}"})),)
        out.append(ModelCall(seq=0, at=AT, model="m", output=text, tool_calls=raw))
        if kind == "invalid":
            out.append(InvalidOutput(seq=0, at=AT, reason=f"unknown tool x{n}"))
            continue
        out.append(
            ToolCall(
                seq=0, at=AT, call_id=cid, tool="fetch", version="1", arguments={"key": f"k{n}"}
            )
        )
        if kind == "started":
            out.append(ToolStarted(seq=0, at=AT, call_id=cid, idempotency_key=cid))
        if kind == "error":
            out.append(
                ToolError(seq=0, at=AT, call_id=cid, tool="fetch", error_type="E", message="no")
            )
        elif kind != "pending":
            result = {"key": f"k{n}", "rows": [{"i": j, "v": f"value {j}"} for j in range(size)]}
            out.append(ToolResult(seq=0, at=AT, call_id=cid, tool="fetch", result=result))
    return out


_STEP = st.tuples(
    st.sampled_from(
        ["call", "call", "call", "talk", "error", "invalid", "started", "user", "human", "pending"]
    ),
    st.integers(min_value=0, max_value=60),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(_STEP, min_size=1, max_size=90),
    tokenizer=st.sampled_from(["o200k_base", "approx"]),
    window=st.sampled_from([2_500, 6_000, 50_000]),
    native=st.booleans(),
)
def test_random_threads_render_the_same_incrementally(
    steps: list[tuple[str, int]], tokenizer: str, window: int, native: bool
) -> None:
    agent = _fetch_agent(tokenizer=tokenizer, context_window=window, native_tools=native)
    incremental, full = _pair(agent)
    assert _replay(_events(steps), incremental, full, "random") >= 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(_STEP, min_size=1, max_size=90),
    window=st.sampled_from([2_500, 6_000, 50_000]),
    tokenizer=st.sampled_from(["o200k_base", "approx"]),
)
def test_random_threads_render_the_same_incrementally_in_the_messages_format(
    steps: list[tuple[str, int]], window: int, tokenizer: str
) -> None:
    agent = _fetch_agent(format="messages", tokenizer=tokenizer, context_window=window)
    incremental, full = _pair(agent)
    assert _replay(_events(steps), incremental, full, "messages") >= 1


def test_the_airline_runs_render_the_same_incrementally_in_the_messages_format() -> None:
    runs = tau_runs()[:40]
    pairs: dict[str, tuple[Renderer, Renderer]] = {}
    compared = 0
    for n, run in enumerate(runs):
        policy, thread = thread_from_openai(run["traj"], thread_id=f"run{n}")
        if policy not in pairs:
            pairs[policy] = _pair(_airline_agent(policy, format="messages", context_window=6_000))
        incremental, full = pairs[policy]
        compared += _replay(list(thread.events), incremental, full, f"messages-{n}")
    assert compared > 400
    extended = sum(p[0]._tails.extended for p in pairs.values())  # type: ignore[union-attr]
    assert extended > 300  # most renders were extensions of the previous one


@pytest.mark.parametrize("fmt", ["compact", "messages"])
def test_cut_results_are_extended_and_render_the_same(fmt: str) -> None:
    """Detail level 1 (older results cut, resolved errors dropped) extends the previous
    rendering too, equal to the full plan; only a new compaction plans from the window."""
    agent = _fetch_agent(
        format=fmt, tokenizer="o200k_base", context_window=6_000, max_result_tokens=40
    )
    incremental, full = _pair(agent)
    steps = [("call", 30), ("error", 0), ("talk", 20), ("started", 25), ("invalid", 0)] * 60
    LEVEL_1[0] = 0
    COMPACTIONS[0] = 0
    assert _replay(_events(steps), incremental, full, f"cut-{fmt}") > 100
    assert LEVEL_1[0] > 60  # most renders at level 1 were extensions
    assert COMPACTIONS[0] >= 1  # and the window still compacts when level 1 is full
