"""Prompt-cache marks: the share of each call's rendered tokens inside the prefix marked
for the provider's cache (`Context.cached_prefix`, where the call reads what the previous
call of its thread wrote).

Each thread is appended event by event and rendered before every model call by one
renderer (as the runtime does: extensions between compactions, a `compacted` event stored
when the rendering asks for one). Per call, with o200k_base:

  * marked: tokens of the system text (with the tool signatures, as OpenAI's and
    Anthropic's defaults send them) and of the last message's first `cached_prefix`
    characters, over the system text and the whole message (the system text is marked on
    every call; the history is the part that grows);
  * history marked: the same for the history message alone (`cached_prefix` characters
    of it, over all of it);
  * identical: the longest prefix of the history message that is byte-identical to the
    previous call's, over all of it: the upper bound a mark could reach (what a provider
    that caches any prefix, such as OpenAI's, may reuse, up to its own granularity).

Threads: the 200 recorded airline runs (`../shared/data/tau-bench-airline`, as
bench/context_tokens.py loads them: the 14 published tools, the policy) with the window as
shipped for gpt-4o (128k: level 0 throughout), a 6k window (compactions) and a 5k window
with results cut to 100 tokens (detail level 1, older results cut, and compactions); and
the long synthetic thread of bench/render_growth.py's cut-results form (1,500-character
results cut to 100 tokens, `keep_recent=4`, a 16k window), 300 turns, level 1 from turn
~40 and a compaction every 33 calls. Token counts do not depend on the machine's load.

Run: python bench/prompt_cache.py [--runs N] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from context_tokens import COUNTER, DATA, common_prefix, schema_tool
from instructions import cut_thread

from threadline import Agent, ContextSettings
from threadline.context.messages import thread_from_openai
from threadline.context.renderer import Renderer
from threadline.events import Compacted, Event, ModelCall, Thread
from threadline.models.openai import OpenAIModel
from threadline.prompts import renderer_for


def calls_of(renderer: Renderer, events: list[Event], tid: str) -> list[dict[str, Any]]:
    """Render `events` before each model call (storing the compactions asked for), and
    return per call: its level, tokens, marked tokens and byte-identical prefix."""
    thread = Thread(tid, "agent")
    out: list[dict[str, Any]] = []
    previous = ""
    for event in [*events, None]:
        if event is None or (isinstance(event, ModelCall) and len(thread)):
            rendered = renderer.render(thread)
            ctx = rendered.context
            text = ctx.messages[-1].content if ctx.messages else ""
            history = COUNTER.count(text)
            marked = COUNTER.count(text[: ctx.cached_prefix])
            same = COUNTER.count(text[: common_prefix(text, previous)]) if previous else 0
            out.append(
                {
                    "level": rendered.layout.level,
                    "compacts": rendered.compaction is not None,
                    "fixed": COUNTER.count(ctx.system),
                    "history": history,
                    "marked": marked,
                    "identical": same,
                }
            )
            previous = text
            if rendered.compaction is not None:
                lo, hi, summary = rendered.compaction
                at, seq = thread.events[-1].at, thread.next_seq
                thread.append(Compacted(seq=seq, at=at, from_seq=lo, to_seq=hi, summary=summary))
        if event is not None:
            thread.append(event.model_copy(update={"seq": thread.next_seq}))
    return out[1:]  # the first call has no previous call to read


def summary(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Token-weighted shares over `calls`, all and at level 1 (medians per call beside)."""
    out: dict[str, Any] = {"calls": len(calls)}
    for name, part in (("all", calls), ("level1", [c for c in calls if c["level"] == 1])):
        if not part:
            out[name] = None
            continue
        hist = sum(c["history"] for c in part) or 1
        out[name] = {
            "calls": len(part),
            "marked": sum(c["fixed"] + c["marked"] for c in part)
            / sum(c["fixed"] + c["history"] for c in part),
            "history_marked": sum(c["marked"] for c in part) / hist,
            "history_identical": sum(c["identical"] for c in part) / hist,
            "median_history_marked": statistics.median(
                c["marked"] / max(1, c["history"]) for c in part
            ),
        }
    return out


AIRLINE: dict[str, dict[str, Any]] = {
    "airline, 128k (as shipped)": {},
    "airline, 6k window": {"context_window": 6_000},
    "airline, 5k window, results cut to 100": {"context_window": 5_000, "max_result_tokens": 100},
}
"""The airline runs' budgets: as shipped for gpt-4o (level 0 throughout), and two small
windows (the runs are short: only these reach level 1, older results cut)."""


def airline(runs: int, settings: dict[str, Any]) -> dict[str, Any]:
    trajectories = json.loads((DATA / "trajectories-gpt-4o.json").read_text())[:runs]
    tools = json.loads((DATA / "tools.json").read_text())
    model = OpenAIModel("gpt-4o", api_key="bench-never-sent")
    renderers: dict[str, Renderer] = {}
    calls: list[dict[str, Any]] = []
    for n, run in enumerate(trajectories):
        policy, thread = thread_from_openai(run["traj"], thread_id=f"run{n}", agent="airline")
        if policy not in renderers:
            agent = Agent(
                "airline",
                tools=[schema_tool(t) for t in tools],
                instructions=policy,
                context=ContextSettings(**settings),
            )
            renderers[policy] = renderer_for(agent)
            renderers[policy].bind(model)
        calls += calls_of(renderers[policy], list(thread.events), f"run{n}")
    return summary(calls)


def synthetic() -> dict[str, Any]:
    grown, agent, model = cut_thread()
    renderer = renderer_for(agent)
    renderer.bind(model)
    events = [e for e in grown.events if not isinstance(e, Compacted)]
    return summary(calls_of(renderer, events, "cut"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for name, settings in AIRLINE.items():
        results[name] = airline(args.runs, settings)
    results["synthetic 300 turns, 16k"] = synthetic()
    header = "threads | calls | at level 1 | marked (request) | history marked | identical"
    print(header + " | level 1: history marked | level 1: identical")
    for name, r in results.items():
        a, l1 = r["all"], r["level1"]
        row = [
            name,
            str(r["calls"]),
            str(l1["calls"] if l1 else 0),
            f"{a['marked']:.3f}",
            f"{a['history_marked']:.3f}",
            f"{a['history_identical']:.3f}",
            f"{l1['history_marked']:.3f}" if l1 else "-",
            f"{l1['history_identical']:.3f}" if l1 else "-",
        ]
        print(" | ".join(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
