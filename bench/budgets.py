"""What a budget costs a thread: the same run with no budget, a thread budget, a tree budget.

An instant scripted model asks for TURNS read-only lookups, one per answer, then finishes;
the thread runs on a SQLite file (the embedded default). A budget adds, per model call, one
commit (the reservation, written before the call) and one event in the answer's commit
(the settlement); a tree budget also updates the tree's row in the store in both. The
limits are high enough never to stop the run. A figure is the median wall time per model
call over interleaved rounds; the ratio is against no budget, measured in the same run.

Run: python bench/budgets.py [--turns 40] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from threadline import Agent, Budget, Runtime, SQLiteStore, Status, tool
from threadline.models.base import ModelProfile
from threadline.models.pricing import Price
from threadline.testing import ScriptedModel, intent

HIGH = Budget(max_model_calls=10**6, max_tokens=10**9, max_usd=10**6)
VARIANTS: dict[str, dict[str, Any]] = {
    "no budget": {},
    "thread budget": {"budget": HIGH},
    "tree budget": {"tree_budget": HIGH},
}


@tool
def lookup(n: int) -> str:
    """Look up record n."""
    return f"record {n}"


def _agent(turns: int, **options: Any) -> Agent:
    answers = [intent("lookup", n=i) for i in range(turns)]
    answers.append(intent("done_for_now", message="all looked up"))
    profile = ModelProfile(price=Price(2.0, 8.0))
    model = ScriptedModel(answers, model_id="bench", profile=profile)
    return Agent("bench", tools=[lookup], model=model, max_steps=turns + 5, **options)


async def _per_call(turns: int, folder: Path, options: dict[str, Any]) -> float:
    agent = _agent(turns, **options)
    async with SQLiteStore(folder / f"{time.monotonic_ns()}.db") as store:
        rt = Runtime(store, agents=[agent])
        started = time.perf_counter()
        thread = await rt.launch(agent, "look them all up")
        elapsed = time.perf_counter() - started
    if thread.status != Status.DONE:
        raise RuntimeError(f"the bench thread ended {thread.status.value}")
    return elapsed / thread.state.model_calls


async def _measure(turns: int, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for name, options in VARIANTS.items():  # interleaved: load drifts evenly
                out[name].append(await _per_call(turns, Path(tmp), options))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures = asyncio.run(_measure(args.turns, args.rounds))
    base = statistics.median(figures["no budget"])
    table = Table(title=f"per model call, median of {args.rounds} rounds of {args.turns} calls")
    for column in ("variant", "ms per call", "x no budget"):
        table.add_column(column)
    report: dict[str, Any] = {}
    for name, values in figures.items():
        median = statistics.median(values)
        report[name] = {"ms_per_call": median * 1000, "ratio": median / base}
        table.add_row(name, f"{median * 1000:.2f}", f"{median / base:.2f}")
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
