"""The embedded local model: tokens/s in and out of process, repacking on and off, grammar.

For each prompt, the calculator agent's first context is rendered (as the runtime would)
and sent to the local model; the answer is interpreted by the reducer exactly as in a run.

Variants, measured in the same run, in interleaved rounds (medians over rounds):

  before                 llama.cpp in this process, weight repacking on (llama.cpp's
                         default `use_extra_bufts=True`): how the backend ran until the
                         out-of-process change
  in-process             in this process, repacking off
  out-of-process         the backend as shipped: a child process, repacking off
  out-of-process+repack  a child process with THREADLINE_LOCAL_REPACK=1
  no grammar             the shipped backend sampling freely (the grammar's baseline)

The in-process variants drive the same code the child runs (`local_child`), minus the
pipes. The child also waits passively for OpenMP work (`OMP_WAIT_POLICY=PASSIVE`) while
this process keeps the environment's policy (spinning by default, as before): run with
`OMP_WAIT_POLICY=PASSIVE` set to give every variant the same policy and measure the
process boundary and repacking alone.

  output tokens/s       output tokens / time from request to answer, over all prompts
  time to first intent  request start -> a validated `tool_call` (or the invalid_output
                        that replaced it): what a user waits for before anything happens
  valid                 answers that became tool_call events (not invalid_output)

The model load (once per variant) is reported separately and excluded from the numbers.
Which llama-cpp-python build is measured is the one the interpreter imports: to compare a
`-march=native` build, run this file with that build's interpreter and compare the JSON.

Run: python bench/local_model.py [--prompts 20] [--rounds 3] [--only out-of-process,before]
     [--model /path/model.gguf] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import json
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console
from rich.table import Table

from threadline import Thread
from threadline.events import UserMessage
from threadline.models.base import Context, ModelOutput
from threadline.models.local import LocalModel, default_model_path
from threadline.prompts import renderer_for
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
VARIANTS = ["before", "in-process", "out-of-process", "out-of-process+repack", "no grammar"]
BASELINE = "before"
console = Console(stderr=True)

Request = Callable[[Context], Awaitable[ModelOutput]]


class InProcess:
    """The child's own serving code called directly in this process (no pipes)."""

    def __init__(self, model: LocalModel) -> None:
        from threadline.models.local_child import _Server

        self.model = model
        self.server = _Server(out=sys.stdout.buffer)  # never written: we call its methods
        self.info: dict[str, Any] = {}

    def load(self) -> dict[str, Any]:
        self.info = self.server.load(dataclasses.asdict(self.model.config))
        return self.info

    async def request(self, context: Context) -> ModelOutput:
        m = self.model
        fields = {
            "messages": m.messages(context),
            "schema": context.output_schema if m.grammar else None,
            "max_tokens": max(1, min(context.max_output_tokens, m.max_output_tokens)),
            "temperature": m.temperature,
            "seed": m.config.seed,
        }
        result = await asyncio.to_thread(self.server.chat, fields)
        return ModelOutput(
            text=result["text"],
            model=m.model_id,
            input_tokens=result["input_tokens"],
            output_tokens=result["output_tokens"],
            latency_ms=result["latency_ms"],
        )


def load_calculator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_calculator", ROOT / "examples/calculator/agent.py"
    )
    if spec is None or spec.loader is None:
        raise SystemExit("examples/calculator/agent.py not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(name: str, path: str | None) -> tuple[Callable[[], dict[str, Any]], Request]:
    """(load, request) for one variant. Each variant gets its own llama.cpp instance."""
    if name in ("before", "in-process"):
        runner = InProcess(LocalModel(path, repack=name == "before"))
        return runner.load, runner.request
    repack = name == "out-of-process+repack"  # a child of its own (another ChildConfig)
    model = LocalModel(path, repack=repack, grammar=name != "no grammar")
    return model.load, model.request


async def measure(request: Request, agent: Any, prompts: list[str]) -> dict[str, Any]:
    first_intent: list[float] = []
    out_tokens: list[int] = []
    in_tokens: list[int] = []
    valid = 0
    at = datetime.now(UTC)
    renderer = renderer_for(agent)
    for prompt in prompts:
        thread = Thread("bench", agent.name)
        thread.append(UserMessage(seq=0, at=at, text=prompt))
        context = renderer.context(thread)
        started = time.perf_counter()
        output = await request(context)
        events = interpret(agent, output.text, output.tool_calls, seq=1, at=at)
        first_intent.append((time.perf_counter() - started) * 1000)
        if first_intent[-1] > 5000:  # say so while a long run is still going
            console.print(f"  slow call: {first_intent[-1] / 1000:.1f}s for {prompt!r}")
        valid += events[0].kind == "tool_call"
        out_tokens.append(output.output_tokens)
        in_tokens.append(output.input_tokens)
    return {
        "prompts": len(prompts),
        "valid": valid,
        "first_intent_ms_median": statistics.median(first_intent),
        "first_intent_ms_p90": sorted(first_intent)[int(0.9 * (len(first_intent) - 1))],
        "output_tokens_per_s": sum(out_tokens) / (sum(first_intent) / 1000),
        "output_tokens_mean": statistics.mean(out_tokens),
        "input_tokens_mean": statistics.mean(in_tokens),
    }


def median_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants")
    parser.add_argument("--model", default=None, help="a GGUF path (default: SmolLM2-135M)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if importlib.util.find_spec("llama_cpp") is None:
        console.print(
            "skipped: llama-cpp-python is not installed (pip install 'threadline[local]')"
        )
        return
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(names) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variant(s) {sorted(unknown)}; known: {VARIANTS}")
    agent = load_calculator().agent
    prompts = (PROMPTS * (args.prompts // len(PROMPTS) + 1))[: args.prompts]
    variants: dict[str, Request] = {}
    loads: dict[str, dict[str, Any]] = {}
    for name in names:
        load, request = build(name, args.model)
        started = time.perf_counter()
        info = await asyncio.to_thread(load)
        loads[name] = {**info, "load_ms_wall": (time.perf_counter() - started) * 1000}
        await request(renderer_for(agent).context(_warm_thread(agent)))  # first-call warm-up
        variants[name] = request
        console.print(f"loaded {name}: use_extra_bufts={info['use_extra_bufts']}")
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for i in range(args.rounds):
        for name, request in variants.items():
            result = await measure(request, agent, prompts)
            rounds[name].append(result)
            console.print(
                f"round {i + 1}/{args.rounds} {name}: "
                f"{result['output_tokens_per_s']:.1f} tokens/s, {result['valid']} valid"
            )
    results = {name: median_of(r) for name, r in rounds.items()}
    print_table(results, loads, args)
    if args.json:
        text = json.dumps(
            {"machine": _machine(), "loads": loads, "rounds": rounds, "results": results},
            indent=2,
        )
        await asyncio.to_thread(Path(args.json).write_text, text)


def print_table(
    results: dict[str, dict[str, Any]], loads: dict[str, dict[str, Any]], args: Any
) -> None:
    base = results.get(BASELINE)
    model = Path(args.model).name if args.model else default_model_path().name
    llama = next(iter(loads.values()))["llama_cpp"]
    table = Table(
        title=f"local model · {model} · llama-cpp-python {llama} · {args.prompts} prompts "
        f"x {args.rounds} rounds (medians)"
    )
    columns = ["variant", "tokens/s", "vs before", "first intent ms (median / p90)"]
    columns += ["out tokens", "valid", "load ms"]
    for column in columns:
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, r in results.items():
        ratio = f"{r['output_tokens_per_s'] / base['output_tokens_per_s']:.2f}x" if base else "-"
        table.add_row(
            name,
            f"{r['output_tokens_per_s']:.1f}",
            ratio,
            f"{r['first_intent_ms_median']:.0f} / {r['first_intent_ms_p90']:.0f}",
            f"{r['output_tokens_mean']:.1f}",
            f"{r['valid']:.0f}/{r['prompts']:.0f}",
            f"{loads[name]['load_ms']:.0f}",
        )
    Console(width=140).print(table)


def _machine() -> dict[str, Any]:
    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "python": platform.python_version(), "at": datetime.now(UTC).isoformat()}


def _warm_thread(agent: Any) -> Thread:
    thread = Thread("warm", agent.name)
    thread.append(UserMessage(seq=0, at=datetime.now(UTC), text="1 plus 1"))
    return thread


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
