"""Dispatch guards over the 200 recorded tau-bench airline conversations (GPT-4o).

Two deterministic policy guards from the airline's own policy, on every
`cancel_reservation` the recorded agent made (69 calls):

* `refund_limit`: a cancellation refunds what the reservation was paid; a refund over
  $1,000 is blocked (the agent is told to transfer the user to a human agent);
* `cancellation_rules`: the policy allows a cancellation within 24 hours of booking, for
  business class, or with travel insurance ("the API does not check these for the agent");
  any other needs a person to confirm the airline cancelled the flight: approval.

Both read the reservation from the thread itself (the recorded `get_reservation_details`
result); a cancellation of a reservation never looked up needs approval. The figures are
cross-checked against the raw recordings, and every guarded thread replays from its
record with guards that raise if asked.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest

from airline_support import run_recorded, tau_runs
from threadline import Agent, Guard, GuardCall, GuardDecision, Status, replay_thread
from threadline.events import GuardVerdict, ToolResult
from threadline.guards import allow, block, require_approval

NOW = datetime(2024, 5, 15, 15, 0)  # "The current time is 2024-05-15 15:00:00 EST."
REFUND_LIMIT = 1000


def reservation(call: GuardCall) -> dict[str, Any] | None:
    """The latest recorded details of the reservation the call names, if looked up."""
    wanted = call.arguments.get("reservation_id")
    for event in reversed(call.thread.events):
        if isinstance(event, ToolResult) and event.tool == "get_reservation_details":
            details = _json(event.result)
            if isinstance(details, dict) and details.get("reservation_id") == wanted:
                return details
    return None


def refund_limit(call: GuardCall) -> GuardDecision:
    found = reservation(call)
    if found is None:
        return require_approval("the reservation was never looked up: the refund is unknown")
    refund = sum(p["amount"] for p in found["payment_history"])
    if refund > REFUND_LIMIT:
        return block(
            f"cancelling refunds ${refund}, over the ${REFUND_LIMIT} limit: transfer the user "
            "to a human agent instead"
        )
    return allow()


def cancellation_rules(call: GuardCall) -> GuardDecision:
    found = reservation(call)
    if found is None:
        return require_approval("the reservation was never looked up")
    recent = NOW - datetime.fromisoformat(found["created_at"]) <= timedelta(hours=24)
    if recent or found["cabin"] == "business" or found["insurance"] == "yes":
        return allow()
    return require_approval(
        f"{found['cabin']} booked {found['created_at']} without insurance: only if the airline "
        "cancelled the flight"
    )


GUARDS = [
    Guard(refund_limit, tools=["cancel_reservation"]),
    Guard(cancellation_rules, tools=["cancel_reservation"]),
]


def _json(value: Any) -> Any:
    try:
        return json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return None


def expected_refund_blocks(run: dict[str, Any]) -> int:
    """Cancellations over the limit, counted from the raw recording."""
    seen: dict[str, dict[str, Any]] = {}
    calls: dict[str, str] = {}
    over = 0
    for m in run["traj"]:
        for c in m.get("tool_calls") or []:
            args = _json(c["function"]["arguments"]) or {}
            if c["function"]["name"] == "cancel_reservation":
                details = seen.get(args.get("reservation_id"))
                paid = sum(p["amount"] for p in details["payment_history"]) if details else 0
                over += paid > REFUND_LIMIT
            calls[c["id"]] = c["function"]["name"]
        if m["role"] == "tool" and calls.get(m["tool_call_id"]) == "get_reservation_details":
            details = _json(m["content"])
            if isinstance(details, dict) and "reservation_id" in details:
                seen[details["reservation_id"]] = details
    return over


def _never_asked(call: GuardCall) -> GuardDecision:
    raise AssertionError("replay asked a guard")


@pytest.mark.slow
async def test_policy_guards_over_the_200_recorded_airline_runs() -> None:
    runs = tau_runs()
    verdicts: Counter[tuple[str, str]] = Counter()
    blocked_runs: Counter[float] = Counter()
    expected = 0
    silent = [Guard(_never_asked, name=g.name, tools=g.tools) for g in GUARDS]
    for run in runs:
        expected += expected_refund_blocks(run)
        agent, thread = await run_recorded(run, GUARDS)
        assert thread.status != Status.RUNNING
        judged = [e for e in thread.events if isinstance(e, GuardVerdict)]
        verdicts.update((v.guard, v.verdict) for v in judged)
        if any(v.verdict == "block" for v in judged):
            blocked_runs[run["reward"]] += 1
            replay_thread(Agent(**_same(agent, silent)), thread)
    cancels = sum(
        c["function"]["name"] == "cancel_reservation"
        for run in runs
        for m in run["traj"]
        for c in m.get("tool_calls") or []
    )
    refund = {v: n for (g, v), n in verdicts.items() if g == "refund_limit"}
    rules = {v: n for (g, v), n in verdicts.items() if g == "cancellation_rules"}
    print(f"\ncancel_reservation calls: {cancels}; refund_limit {refund}; rules {rules}")
    print(f"runs with a block by recorded reward: {dict(blocked_runs)}")
    assert sum(refund.values()) == cancels  # every cancellation judged, once
    assert refund.get("block", 0) == expected > 0
    assert sum(rules.values()) == cancels - refund.get("block", 0)  # a block ends the checks
    assert set(verdicts) <= {
        (g.name, v) for g in GUARDS for v in ("allow", "block", "require_approval")
    }


def _same(agent: Any, guards: list[Guard]) -> dict[str, Any]:
    """The agent's configuration with other guards (replay needs the same tools)."""
    return {
        "name": agent.name,
        "tools": list(agent.registry),
        "max_steps": agent.max_steps,
        "max_consecutive_errors": agent.max_consecutive_errors,
        "guards": guards,
    }
