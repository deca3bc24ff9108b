"""Growth per context format: turn cost at the end of a 1,000-turn thread against turn 10.

The growth test of `bench/loop.py` (one thread, `MemoryStore`, a 16k window so the budget
compacts, one model turn and its tool call per `Runtime.advance(thread, max_steps=2)`, an
instant scripted model) run once per form the renderer can take, in one process:

  * compact, native tool definitions (what the scripted model's profile gets by default);
  * compact, tool signatures in the system text (`native_tools=False`, the hosted default);
  * messages (the chat array), counted approximately (the scripted model's profile) and
    with o200k_base (a hosted model's exact count);
  * compact with 1,500-character results and `max_result_tokens=100`, `keep_recent=4`:
    older results are cut, so renders are at detail level 1 (older events reduced), which
    the incremental path extends too (a full plan only when the window compacts).

Each figure is the median turn at turns 1-10 and at the last 10, and their ratio (goal of
issue 15: below 1.3). The forms run interleaved in rounds (each form once, then again),
the ratio reported is the median over rounds, so the machine's drift cancels.

Run: python bench/render_growth.py [--turns 1000] [--rounds 3] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loop import ScriptModel

from threadline import Agent, ContextSettings, MemoryStore, Runtime, tool

console = Console(width=140)

PAGE = "lorem ipsum dolor sit amet " * 56  # about 1,500 characters


@tool
async def lookup(key: str) -> str:
    """Read-only lookup of a key."""
    return key.upper()


@tool(name="lookup")
async def lookup_page(key: str) -> str:
    """Read-only lookup of a key (a long page)."""
    return f"{key}: {PAGE}"


FORMS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "compact_native": ("compact, native tool definitions", {"native_tools": True}, False),
    "compact_signatures": (
        "compact, tool signatures in the prompt",
        {"native_tools": False},
        False,
    ),
    "messages": ("messages (chat array)", {"format": "messages"}, False),
    "messages_o200k": (
        "messages, counted with o200k_base",
        {"format": "messages", "tokenizer": "o200k_base"},
        False,
    ),
    "reduced": (
        "compact, long results cut (detail level 1)",
        {"max_result_tokens": 100, "keep_recent": 4},
        True,
    ),
}


def growth(form: str, turns: int, window: int = 16_000) -> dict[str, float]:
    """Median turn cost at the last 10 turns over turns 1-10, for one form."""
    _, settings, long_results = FORMS[form]

    async def go() -> dict[str, float]:
        agent = Agent(
            "bench",
            tools=[lookup_page if long_results else lookup],
            max_steps=turns + 15,
            model=ScriptModel(turns + 10),
            context=ContextSettings(context_window=window, **settings),
        )
        rt = Runtime(MemoryStore(), agents=[agent])
        thread = await rt.launch(agent, "look up abc, every time", advance=False)
        times: list[float] = []
        for _ in range(turns):
            started = time.perf_counter()
            thread = await rt.advance(thread, max_steps=2)
            times.append(time.perf_counter() - started)
        if thread.status != "running" or len(thread) < 3 * turns:
            raise RuntimeError(f"{form}: thread stopped: {thread.status}, {len(thread)} events")
        early, late = statistics.median(times[:10]), statistics.median(times[-10:])
        return {"turn_10_us": early * 1e6, "last_us": late * 1e6, "ratio": late / early}

    return asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    rounds: list[dict[str, dict[str, float]]] = []
    for r in range(args.rounds):
        console.print(f"round {r + 1}/{args.rounds} ...", highlight=False)
        rounds.append({form: growth(form, args.turns) for form in FORMS})
    table = Table(title=f"growth per format: turn {args.turns} against turn 10 (16k window)")
    for col in ("form", "turns 1-10 us", f"last 10 of {args.turns} us", "ratio", "goal < 1.3"):
        table.add_column(col, justify="left" if col == "form" else "right")
    out: dict[str, Any] = {"turns": args.turns, "rounds": args.rounds, "forms": {}}
    for form, (label, _, _) in FORMS.items():
        early = statistics.median(r[form]["turn_10_us"] for r in rounds)
        late = statistics.median(r[form]["last_us"] for r in rounds)
        ratio = statistics.median(r[form]["ratio"] for r in rounds)
        out["forms"][form] = {"label": label, "turn_10_us": early, "last_us": late, "ratio": ratio}
        met = "met" if ratio < 1.3 else "NOT met"
        table.add_row(label, f"{early:,.0f}", f"{late:,.0f}", f"{ratio:.2f}", met)
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
