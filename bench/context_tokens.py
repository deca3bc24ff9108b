"""Context tokens: what Threadline sends against the raw chat-completions request, the
prompt-cache prefix, and render cost.

Part 1 (tokens). The 200 recorded tau-bench airline runs (`../shared/data/tau-bench-airline/`:
system policy, user turns, tool calls and results; `tools.json` holds the 14 tool schemas)
are imported as threads. The airline agent registers the 14 published schemas with
`Tool.from_json_schema` (validating; the writes side-effecting and behind approvals) and
keeps every setting as shipped (the 2 built-in human tools included). Each form is counted
as the JSON request body the backend's SDK would send (`request_body`), o200k_base tokens:

  * baseline: the recorded run as a chat-completions client sends it,
    `{"model", "messages", "tools"}` serialised the way the openai client does
    (`separators=(",", ":")`, `ensure_ascii=False`);
  * default: `ContextSettings()` bound to `OpenAIModel("gpt-4o")` (the hosted default:
    tool signatures in the system text, the intent envelope as the response format);
  * anthropic: the same agent bound to `AnthropicModel` as shipped (intent mode: tool
    signatures in the system text, one forced `next_step` tool whose input is the intent);
  * anthropic tools: `AnthropicModel(mode="tools")` (native tool use, the old default);
  * native: `native_tools=True` (compact history, tool JSON in the `tools` parameter);
  * messages: the chat-array format with native tool JSON.

Nothing is dropped: tests/context/test_token_lean.py checks on all 200 runs that every
tool definition, text, call argument and result value is in what the default sends.

Prompt-cache prefix: each run is rendered before each of its model calls (the thread up to
that call); the share of one call's rendering (system, then messages) that is byte-identical
at the start of the next call's, summed over the consecutive pairs.

Part 2 (render time). Threads of 1,000 to 10,000 events are rendered under a 32k budget the
way the runtime does it: after every step (3 new events) the next context is rendered. The
time per render once the thread's older events have been counted is compared across
lengths; the ratio to the shortest thread shows whether it grows with the thread.

Run: python bench/context_tokens.py [--runs N] [--per-run] [--json results.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from threadline import Agent, ContextSettings, Tool, tool
from threadline.context.compact import compact_block
from threadline.context.messages import thread_from_openai
from threadline.context.renderer import Renderer
from threadline.context.tokens import BPECounter
from threadline.events import Compacted, ModelCall, Thread, ToolCall, ToolResult, UserMessage
from threadline.models.base import Context, Model
from threadline.prompts import renderer_for

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "tau-bench-airline"
console = Console(width=160)
COUNTER = BPECounter("o200k_base")


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


WRITES = frozenset(
    {
        "book_reservation",
        "cancel_reservation",
        "send_certificate",
        "update_reservation_baggages",
        "update_reservation_flights",
        "update_reservation_passengers",
    }
)


def schema_tool(spec: dict[str, Any]) -> Tool:
    """A tool registered from its published JSON Schema, validating its arguments.

    Never run (the runs are recorded); the writes are side-effecting and behind approvals,
    as a user would register them.
    """
    fn = spec["function"]
    write = fn["name"] in WRITES
    return Tool.from_json_schema(
        fn["name"],
        fn["parameters"],
        description=fn.get("description", ""),
        side_effects=write,
        approval="always" if write else "never",
    )


def tau_renderer(
    policy: str,
    tools: list[dict[str, Any]],
    model: Model,
    fmt: str = "compact",
    native_tools: bool | None = None,
) -> Renderer:
    """The renderer of the airline agent as a user declares it, bound to `model`.

    Everything as shipped (the built-in human tools, redaction, the budget sized for the
    model) except the format and `native_tools` a row asks for.
    """
    agent = Agent(
        "airline",
        tools=[schema_tool(t) for t in tools],
        instructions=policy,
        context=ContextSettings(format=fmt, native_tools=native_tools),  # type: ignore[arg-type]
    )
    renderer = renderer_for(agent)
    renderer.bind(model)
    return renderer


def hosted_models() -> dict[str, Model]:
    """The backend each form is sent by, for its request body (never called: a key is
    given so the SDK clients build, and nothing is sent). The native forms use OpenAI's
    `tools` mode, where the definitions travel in the `tools` parameter."""
    from threadline.models.anthropic import AnthropicModel
    from threadline.models.openai import OpenAIModel

    key = "bench-never-sent"
    native = OpenAIModel("gpt-4o", mode="tools", api_key=key)
    return {
        "default": OpenAIModel("gpt-4o", api_key=key),
        "anthropic": AnthropicModel("claude-sonnet-4-5", api_key=key),
        "anthropic_tools": AnthropicModel("claude-sonnet-4-5", mode="tools", api_key=key),
        "native": native,
        "messages": native,
    }


FORMS = (
    ("default", "default (OpenAI gpt-4o): compact, tool signatures, JSON mode"),
    ("anthropic", "default (Anthropic): signatures, one forced next_step tool"),
    ("anthropic_tools", "Anthropic tools mode (native tool use)"),
    ("native", "compact + native tool JSON (OpenAI tools mode)"),
    ("messages", "messages format (chat array + native tool JSON, tools mode)"),
)


def _body_tokens(model: Model, ctx: Context) -> int:
    """Tokens of the request body the backend's SDK would send for `ctx`."""
    body, _ = model.request_body(ctx)  # type: ignore[attr-defined]
    return COUNTER.count(_dump(body))


def _rendered_text(ctx: Context) -> str:
    """What a provider's prompt cache sees, in order: system, then every message."""
    return "\n".join([ctx.system, *(f"{m.role}:{m.content}" for m in ctx.messages)])


def common_prefix(a: str, b: str) -> int:
    """Characters at the start of `a` and `b` that are the same."""
    n = min(len(a), len(b))
    lo, hi = 0, n  # the largest k with a[:k] == b[:k], by bisection (C-speed compares)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def prefix_shares(renderer: Renderer, thread: Thread) -> list[tuple[int, int]]:
    """(bytes of call k's rendering reused verbatim by call k+1, bytes of call k) for each
    pair of consecutive model calls of `thread`, each rendered from the events before it."""
    texts = []
    for i, e in enumerate(thread.events):
        if isinstance(e, ModelCall) and i > 0:
            part = Thread(thread.id, thread.agent)
            for event in thread.events[:i]:
                part.append(event)
            texts.append(_rendered_text(renderer.render(part).context))
    return [(common_prefix(a, b), len(a)) for a, b in pairwise(texts)]


def token_bench(
    runs: list[dict[str, Any]], tools: list[dict[str, Any]], per_run: bool
) -> dict[str, Any]:
    rows = []
    shares: list[tuple[int, int]] = []
    models = hosted_models()
    renderers: dict[tuple[str, str], Renderer] = {}
    for n, run in enumerate(runs):
        traj = run["traj"]
        baseline = COUNTER.count(_dump({"model": "gpt-4o", "messages": traj, "tools": tools}))
        policy, thread = thread_from_openai(traj, thread_id=f"run{n}", agent="airline")
        if (policy, "default") not in renderers:
            for key, model in models.items():
                fmt = "messages" if key == "messages" else "compact"
                native = True if key == "native" else None
                renderers[(policy, key)] = tau_renderer(policy, tools, model, fmt, native)
        row: dict[str, Any] = {"run": n, "task": run.get("task_id"), "baseline": baseline}
        for key, _ in FORMS:
            rendered = renderers[(policy, key)].render(thread)
            row[key] = _body_tokens(models[key], rendered.context)
        rows.append(row)
        shares += prefix_shares(renderers[(policy, "default")], thread)
    total_b = sum(r["baseline"] for r in rows)
    table = Table(
        title=f"tau-bench airline: {len(rows)} runs, o200k_base tokens of the request body, "
        "14 published tools registered with Tool.from_json_schema (+ the 2 human tools)"
    )
    for col in ("form", "total tokens", "vs raw body", "run min", "run median", "run max"):
        table.add_column(col, justify="right" if col != "form" else "left")
    table.add_column("runs > 1.0", justify="right")
    table.add_row("raw chat-completions JSON body", f"{total_b:,}", "1.000", "", "", "", "")
    out: dict[str, Any] = {"runs": len(rows), "baseline": total_b, "forms": {}}
    for key, label in FORMS:
        total = sum(r[key] for r in rows)
        ratios = sorted(r[key] / r["baseline"] for r in rows)
        above = sum(1 for v in ratios if v > 1.0)
        out["forms"][key] = {
            "label": label,
            "tokens": total,
            "ratio": total / total_b,
            "ratio_min": ratios[0],
            "ratio_median": statistics.median(ratios),
            "ratio_max": ratios[-1],
            "runs_above_raw": above,
        }
        table.add_row(
            label,
            f"{total:,}",
            f"{total / total_b:.3f}",
            f"{ratios[0]:.3f}",
            f"{statistics.median(ratios):.3f}",
            f"{ratios[-1]:.3f}",
            str(above),
        )
    console.print(table)
    if per_run:
        each = Table(title="per run (ratios against the raw body)")
        for col in ("run", "task", "raw", *(k for k, _ in FORMS)):
            each.add_column(col, justify="right")
        for r in rows:
            each.add_row(
                str(r["run"]),
                str(r["task"]),
                str(r["baseline"]),
                *(f"{r[k] / r['baseline']:.3f}" for k, _ in FORMS),
            )
        console.print(each)
    default = out["forms"]["default"]
    console.print(
        f"default rendering: {default['ratio']:.3f} of the raw body (goal: at most 0.70), "
        f"worst run {default['ratio_max']:.3f} (goal: never above 1.0; "
        f"{default['runs_above_raw']} runs above)",
        highlight=False,
    )
    reused = sum(a for a, _ in shares) / max(1, sum(b for _, b in shares))
    per_call = statistics.median(a / b for a, b in shares) if shares else 0.0
    out["prefix"] = {"pairs": len(shares), "reused_share": reused, "median_share": per_call}
    console.print(
        f"prompt-cache prefix: over {len(shares)} consecutive model-call pairs, "
        f"{reused:.4f} of the previous call's rendering is byte-identical at the start of the "
        f"next (median per call {per_call:.4f})",
        highlight=False,
    )
    return out


# -- part 2: render time on long threads -------------------------------------------------


@tool
def fetch(key: str) -> dict[str, Any]:
    """Fetch a record."""
    return {"key": key}


AT = datetime(2024, 1, 1, tzinfo=UTC)


def _step(thread: Thread, i: int) -> None:
    seq = thread.next_seq
    thread.append(ModelCall(seq=seq, at=AT, model="m", output="{}"))
    thread.append(
        ToolCall(
            seq=seq + 1,
            at=AT,
            call_id=f"c{seq}",
            tool="fetch",
            version="1",
            arguments={"key": f"k{i}"},
        )
    )
    thread.append(
        ToolResult(
            seq=seq + 2,
            at=AT,
            call_id=f"c{seq}",
            tool="fetch",
            result={"key": f"k{i}", "value": i, "note": f"record {i} " * 6},
        )
    )


def _store_compaction(thread: Thread, rendered: Any) -> None:
    """What the runtime does before a model call: store the compaction the render needs."""
    if rendered.compaction is not None:
        lo, hi, summary = rendered.compaction
        thread.append(
            Compacted(seq=thread.next_seq, at=AT, from_seq=lo, to_seq=hi, summary=summary)
        )


def render_bench(lengths: tuple[int, ...], steps: int) -> dict[str, Any]:
    renderer = renderer_for(
        Agent(
            "long",
            tools=[fetch],
            instructions="Fetch what is asked.",
            context=ContextSettings(tokenizer="o200k_base", context_window=32_000),
        )
    )
    results = []
    for length in lengths:
        thread = Thread(f"long-{length}", "long")
        thread.append(UserMessage(seq=0, at=AT, text="Fetch every record, one by one."))
        i = 0
        while thread.next_seq + 3 * steps + 3 <= length:
            _step(thread, i)
            i += 1
        started = time.perf_counter()
        rendered = renderer.render(thread)  # the first render counts what it looks at
        cold = time.perf_counter() - started
        _store_compaction(thread, rendered)
        times = []
        gc.collect()
        gc.disable()  # as timeit does: a collection is a cost of the heap, not of rendering
        try:
            for _ in range(steps):  # then the runtime's rhythm: one step, one render
                _step(thread, i)
                i += 1
                started = time.perf_counter()
                rendered = renderer.render(thread)
                times.append(time.perf_counter() - started)
                _store_compaction(thread, rendered)
        finally:
            gc.enable()
        ctx = rendered.context
        used = COUNTER.count(ctx.system) + sum(COUNTER.count(m.content) for m in ctx.messages)
        body = ctx.messages[0].content
        newest = "\n".join(
            b
            for b in (compact_block(thread.events, j) for j in range(len(thread) - 10, len(thread)))
            if b
        )
        results.append(
            {
                "events": len(thread),
                "cold_ms": cold * 1000,
                "warm_ms": statistics.median(times) * 1000,
                # the fastest render: the cost of the work itself on a shared machine
                "best_ms": min(times) * 1000,
                "tokens": used,
                "fits": used <= 32_000 - ctx.max_output_tokens,
                "newest_verbatim": body.endswith(newest),
                "compacted_upto": max(
                    (e.to_seq for e in thread.events[-3 * steps - 6 :] if isinstance(e, Compacted)),
                    default=-1,
                ),
            }
        )
    # The reference is the shortest thread that already fills the window (shorter ones
    # render everything verbatim, a different and cheaper regime).
    full = [r for r in results if r["compacted_upto"] >= 0] or results
    base = full[0]["best_ms"]
    table = Table(title="rendering long threads under a 32k budget (compact form)")
    for col in (
        "events",
        "first render ms",
        "median ms",
        "best ms",
        "best vs reference",
        "input tokens",
        "fits",
        "newest verbatim",
        "summarised 0..N",
    ):
        table.add_column(col, justify="right")
    for r in results:
        r["ratio"] = r["best_ms"] / base
        table.add_row(
            f"{r['events']:,}",
            f"{r['cold_ms']:.1f}",
            f"{r['warm_ms']:.2f}",
            f"{r['best_ms']:.2f}",
            f"{r['ratio']:.2f}",
            f"{r['tokens']:,}",
            str(r["fits"]),
            str(r["newest_verbatim"]),
            str(r["compacted_upto"]),
        )
    console.print(table)
    console.print(
        f"time per render, longest / shortest full-window thread: "
        f"{results[-1]['best_ms'] / base:.2f} (best of {steps} renders each)",
        highlight=False,
    )
    return {
        "lengths": results,
        "reference_events": full[0]["events"],
        "ratio_longest_to_reference": results[-1]["best_ms"] / base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="tau-bench runs to render")
    parser.add_argument("--per-run", action="store_true", help="print every run's ratio")
    parser.add_argument("--steps", type=int, default=40, help="renders timed per length")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--tokens-only", action="store_true", help="skip the render timing")
    args = parser.parse_args()
    out: dict[str, Any] = {}
    trajectories = DATA / "trajectories-gpt-4o.json"
    if trajectories.is_file():
        runs = json.loads(trajectories.read_text())[: args.runs]
        tools = json.loads((DATA / "tools.json").read_text())
        out["tokens"] = token_bench(runs, tools, args.per_run)
    else:
        console.print(
            f"skipping the token comparison: {trajectories} not found "
            "(see ../shared/data/README.md)",
            highlight=False,
        )
    if not args.tokens_only:
        out["render"] = render_bench((1_000, 2_000, 5_000, 10_000, 20_000), args.steps)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    sys.exit(0)


if __name__ == "__main__":
    main()
