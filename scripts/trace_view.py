"""Render the trace of one real run as a waterfall picture (docs/img/trace-view.png).

    .venv/bin/python scripts/trace_view.py [--out docs/img/trace-view.png] [--model local:smollm2]

Runs the calculator example once on the configured model (default: the embedded local
model, so the model calls take real time), captures the spans with the OpenTelemetry SDK's
in-memory exporter, and draws them the way a trace viewer does: one row per span, indented
under its parent, a bar from its start to its end, its key attributes beside it. Needs the
`otel`, `local` and `charts` extras.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


async def _run(model_spec: str) -> list[Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from threadline import Runtime
    from threadline.loader import load_agent
    from threadline.models.registry import resolve_model
    from threadline.observability import TracingObserver
    from threadline.stores import MemoryStore

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    agent = load_agent(f"{ROOT / 'examples/calculator/agent.py'}:agent")
    runtime = Runtime(
        MemoryStore(), model=resolve_model(model_spec), observers=[TracingObserver(provider)]
    )
    thread = await runtime.launch(agent, "Add 2 and 3.", metadata={"traceparent": _TRACEPARENT})
    for call_id in list(thread.state.pending):  # approve a division, if the model asks
        await runtime.approve(thread.id, call_id, by="trace-view")
        thread = await runtime.advance(thread.id)
    print(f"thread {thread.id}: {thread.status.value}, {len(thread.events)} events")
    return list(exporter.get_finished_spans())


_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
_SHOWN = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.tool.name",
    "threadline.status",
)


def _draw(spans: list[Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = {s.context.span_id for s in spans}

    def is_child(span: Any) -> bool:
        return span.parent is not None and span.parent.span_id in ids

    spans = sorted(spans, key=lambda s: (s.start_time, is_child(s)))
    t0 = min(s.start_time for s in spans)
    end = max(s.end_time for s in spans)
    fig, ax = plt.subplots(figsize=(13, 0.4 * len(spans) + 1.4))
    labels = []
    for row, span in enumerate(spans):
        start = (span.start_time - t0) / 1e6
        took = (span.end_time - span.start_time) / 1e6
        width = max(took, (end - t0) / 1e6 / 400)
        color = {"chat": "#4c78a8", "execute_tool": "#f58518"}.get(span.name.split()[0], "#9d9d9d")
        ax.barh(row, width, left=start, height=0.6, color=color)
        attrs = span.attributes or {}
        detail = ", ".join(f"{k.split('.')[-1]}={attrs[k]}" for k in _SHOWN if k in attrs)
        ax.text(start + width, row, f"  {took:,.1f} ms  {detail}", va="center", fontsize=7)
        labels.append(("    " if is_child(span) else "") + f"{span.name}  (seq {attrs.get('seq')})")
    ax.set_yticks(range(len(spans)), labels, fontsize=8, family="monospace")
    ax.tick_params(axis="y", length=0)
    ax.set_xlim(0, (end - t0) / 1e6 * 1.9)
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds since the trace started")
    ax.set_title(f"trace {spans[0].context.trace_id:032x}: calculator, one run", fontsize=10)
    ax.spines[["top", "right", "left"]].set_visible(False)
    for label in ax.get_yticklabels():
        label.set_horizontalalignment("left")
    ax.yaxis.set_tick_params(pad=300)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out} ({len(spans)} spans)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs/img/trace-view.png")
    parser.add_argument("--model", default="local:smollm2")
    args = parser.parse_args()
    _draw(asyncio.run(_run(args.model)), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
