"""The embedded local model: tokens per second and time to first intent, grammar on vs off.

For each prompt, the calculator agent's first context is rendered (as the runtime would)
and sent to the local model; the answer is interpreted by the reducer exactly as in a run.

  time to first intent  request start -> a validated `tool_call` (or the invalid_output that
                        replaced it): what a user waits for before anything happens
  output tokens/s       output tokens / generation latency (llama.cpp's own token count)
  valid                 answers that became tool_call events (not invalid_output)

The baseline is the same model sampling without the grammar, measured in the same run;
the ratio column is grammar-on / grammar-off. The model load (once per process) is
reported separately and excluded from the per-call numbers.

Run: python bench/local_model.py [--prompts 20] [--model /path/model.gguf] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console
from rich.table import Table

from threadline import Thread
from threadline.events import UserMessage
from threadline.models.local import LocalModel
from threadline.reducer import interpret

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [
    "what is 3 plus 4?",
    "multiply 6 by 7",
    "subtract 5 from 20",
    "divide 81 by 9",
    "add 10 and 32",
    "What's 12 times 12?",
    "100 minus 58",
    "what is 2.5 + 2.5",
    "compute 7 * 8",
    "sum of 1000 and 24",
    "what is -3 plus 8",
    "double 21",
    "how much is 0.1 + 0.2",
    "I have 15 apples and eat 4. How many are left?",
    "hello",
    "tell me a joke",
    "halve 50",
    "3 plus 4 times 2",
    "what's 9 squared?",
    "add 1, 2 and 3",
]
console = Console()


def load_calculator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_calculator", ROOT / "examples/calculator/agent.py"
    )
    if spec is None or spec.loader is None:
        raise SystemExit("examples/calculator/agent.py not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def measure(model: LocalModel, agent: Any, prompts: list[str]) -> dict[str, Any]:
    first_intent: list[float] = []
    tokens_per_s: list[float] = []
    out_tokens: list[int] = []
    in_tokens: list[int] = []
    valid = 0
    at = datetime.now(UTC)
    for prompt in prompts:
        thread = Thread("bench", agent.name)
        thread.append(UserMessage(seq=0, at=at, text=prompt))
        context = agent.render(thread)
        started = time.perf_counter()
        output = await model.request(context)
        events = interpret(agent, output.text, output.tool_calls, seq=1, at=at)
        first_intent.append((time.perf_counter() - started) * 1000)
        valid += events[0].kind == "tool_call"
        out_tokens.append(output.output_tokens)
        in_tokens.append(output.input_tokens)
        if output.latency_ms > 0:
            tokens_per_s.append(output.output_tokens / (output.latency_ms / 1000))
    return {
        "model": model.model_id,
        "prompts": len(prompts),
        "valid": valid,
        "first_intent_ms_median": statistics.median(first_intent),
        "first_intent_ms_p90": sorted(first_intent)[int(0.9 * (len(first_intent) - 1))],
        "output_tokens_per_s": sum(out_tokens) / (sum(first_intent) / 1000),
        "output_tokens_per_s_median": statistics.median(tokens_per_s),
        "output_tokens_mean": statistics.mean(out_tokens),
        "input_tokens_mean": statistics.mean(in_tokens),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--model", default=None, help="a GGUF path (default: SmolLM2-135M)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        console.print(
            "skipped: llama-cpp-python is not installed (pip install 'threadline[local]')"
        )
        return
    agent = load_calculator().agent
    prompts = (PROMPTS * (args.prompts // len(PROMPTS) + 1))[: args.prompts]
    constrained = LocalModel(args.model, grammar=True)
    free = LocalModel(args.model, grammar=False)
    started = time.perf_counter()
    constrained.load()
    load_ms = (time.perf_counter() - started) * 1000
    await constrained.request(agent.render(_warm_thread(agent)))  # first-call warm-up
    results = {
        "grammar": await measure(constrained, agent, prompts),
        "no_grammar": await measure(free, agent, prompts),
    }
    on, off = results["grammar"], results["no_grammar"]
    table = Table(
        title=f"local model · {on['model']} · {len(prompts)} prompts · load {load_ms:.0f} ms"
    )
    for column in ("metric", "grammar", "no grammar (baseline)", "ratio"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    rows = [
        ("time to first intent, median (ms)", "first_intent_ms_median", "{:.0f}"),
        ("time to first intent, p90 (ms)", "first_intent_ms_p90", "{:.0f}"),
        ("output tokens/s (overall)", "output_tokens_per_s", "{:.1f}"),
        ("output tokens/s (median call)", "output_tokens_per_s_median", "{:.1f}"),
        ("output tokens per answer", "output_tokens_mean", "{:.1f}"),
        ("input tokens per answer", "input_tokens_mean", "{:.0f}"),
        ("valid intents", "valid", "{}"),
    ]
    for label, key, fmt in rows:
        ratio = f"{on[key] / off[key]:.2f}x" if off[key] else "-"
        table.add_row(label, fmt.format(on[key]), fmt.format(off[key]), ratio)
    console.print(table)
    if args.json:
        text = json.dumps({"load_ms": load_ms, **results}, indent=2)
        await asyncio.to_thread(Path(args.json).write_text, text)


def _warm_thread(agent: Any) -> Thread:
    thread = Thread("warm", agent.name)
    thread.append(UserMessage(seq=0, at=datetime.now(UTC), text="1 plus 1"))
    return thread


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
