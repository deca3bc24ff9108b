"""What a turn of the agent loop costs, measured as users run agents, against peers.

Every figure is a ratio against a baseline measured in the same run; every round measures
every row once, in turn (interleaved), after a dropped warm-up round, and each ratio is the
median of the per-round ratios, so drift of a shared machine cancels out.

1. The loop (bench/loop.py, bench/peers.py): 10 model turns (9 read-only tool calls and a
   final answer, an instant scripted model), per model turn. Threadline through
   `Runtime.launch` with the default renderer on `MemoryStore` and `SQLiteStore` (FULL),
   plus the renderer-less rows (a constant context: a lower bound, labelled); LangGraph
   without a checkpointer and with `SqliteSaver`; pydantic-ai and the OpenAI Agents SDK in
   memory; SQLite's own durable commit of one event-sized row.
2. Growth (bench/loop.py): one thread run to 1,000 turns with the default renderer and a
   budget that compacts; the median turn at the end over the median at turns 1-10.
3. Storage (bench/storage.py): the database file after one thread of 100 and 300 turns with a
   1 KB tool result, Threadline's SQLite file against LangGraph's SqliteSaver.
4. Concurrency (bench/concurrency.py): 64 threads advancing at once in one process on SQLite
   FULL: commits (fsyncs) per turn with group commit, against group commit off.
5. Concurrency on PostgreSQL (`concurrency-pg`, bench/concurrency.py): the same 64 threads on
   the local server: round trips per turn and append waits, grouping on against off
   (skipped, saying why, when the server is not reachable).

The concurrency parts run as bench/concurrency.py runs them, and as `threadline worker`
runs: after the first warm-up round, `threadline.settle_heap()` freezes what start-up made
(once: the parts after it run frozen too); `--no-settle` never freezes it.

Run: python bench/overhead.py [--quick] [--json results.json] [--only loop,growth,...]
[--no-settle]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from threadline import settle_heap
from threadline.events import ToolResult

sys.path.insert(0, str(Path(__file__).resolve().parent))
import concurrency  # bench/ modules, next to this file
import loop
import peers
import storage

console = Console(width=160)
PARTS = ("loop", "growth", "storage", "concurrency", "concurrency-pg")


def sqlite_commit_us(path: Path, n: int = 200) -> float:
    """SQLite's own durable commit of one event-sized row (WAL, synchronous=FULL)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS e (t TEXT, seq INTEGER, body TEXT, PRIMARY KEY (t, seq))"
    )
    body = ToolResult(
        seq=0, at=datetime.now(UTC), call_id="c1", tool="lookup", result="ABC"
    ).model_dump_json()
    started = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO e VALUES (?,?,?)", (str(path), i, body))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed / n * 1e6


# key, label, baseline key, goal (None: no goal)
LOOP_ROWS: tuple[tuple[str, str, str, float | None], ...] = (
    ("tl-memory", "Threadline, MemoryStore, default renderer", "lg-memory", 1 / 3),
    ("tl-memory-bare", "Threadline, MemoryStore, renderer-less (lower bound)", "lg-memory", None),
    ("tl-sqlite", "Threadline, SQLiteStore FULL, default renderer", "lg-sqlite", 1 / 5),
    (
        "tl-sqlite-bare",
        "Threadline, SQLiteStore FULL, renderer-less (lower bound)",
        "lg-sqlite",
        None,
    ),
    (
        "tl-sqlite-depth3",
        "Threadline, SQLiteStore FULL, default renderer, pipeline_depth=3 (before)",
        "lg-sqlite",
        None,
    ),
    (
        "tl-sqlite-depth1",
        "Threadline, SQLiteStore FULL, default renderer, pipeline_depth=1",
        "lg-sqlite",
        None,
    ),
    (
        "tl-sqlite-serial",
        "Threadline, SQLiteStore FULL, default renderer, not pipelined",
        "lg-sqlite",
        None,
    ),
    ("lg-memory", "LangGraph, no checkpointer", "lg-memory", None),
    ("lg-sqlite", "LangGraph + SqliteSaver (FULL, durability=sync)", "lg-sqlite", None),
    ("pydantic-ai", "pydantic-ai, in memory (FunctionModel)", "lg-memory", None),
    ("openai-agents", "OpenAI Agents SDK, in memory (scripted Model)", "lg-memory", None),
)


def loop_measures(tmpdir: Path, loops: int) -> dict[str, Callable[[], float | None]]:
    return {
        "commit": lambda: sqlite_commit_us(tmpdir / f"commit-{time.monotonic_ns()}.db"),
        "tl-memory": lambda: loop.threadline_us(tmpdir, "memory", True, loops),
        "tl-memory-bare": lambda: loop.threadline_us(tmpdir, "memory", False, loops),
        "tl-sqlite": lambda: loop.threadline_us(tmpdir, "sqlite", True, loops),
        "tl-sqlite-bare": lambda: loop.threadline_us(tmpdir, "sqlite", False, loops),
        "tl-sqlite-depth3": lambda: loop.threadline_us(tmpdir, "sqlite", True, loops, depth=3),
        "tl-sqlite-depth1": lambda: loop.threadline_us(tmpdir, "sqlite", True, loops, depth=1),
        "tl-sqlite-serial": lambda: loop.threadline_us(
            tmpdir, "sqlite", True, loops, pipelined=False
        ),
        "lg-memory": lambda: loop.langgraph_us(tmpdir, False, loops),
        "lg-sqlite": lambda: loop.langgraph_us(tmpdir, True, loops),
        "pydantic-ai": lambda: peers.pydantic_ai_us(loops),
        "openai-agents": lambda: peers.openai_agents_us(loops),
    }


def rounds_of(
    measures: dict[str, Callable[[], Any]],
    rounds: int,
    name: str,
    ready: Callable[[], object] | None = None,
) -> list[dict[str, Any]]:
    """Interleaved rounds of every measure; round 0 warms imports and caches and is dropped,
    then `ready()` runs (the process now set up, as a worker is once it serves).

    Each round starts one measure further along the list (the order rotates), so no measure
    always runs first: on a shared machine whichever runs first in a round tends to come out
    ahead, which skews ratios taken within the round."""
    out: list[dict[str, Any]] = []
    keys = list(measures)
    for r in range(rounds + 1):
        turn = r % len(keys) if keys else 0
        ran = {key: measures[key]() for key in keys[turn:] + keys[:turn]}
        row = {key: ran[key] for key in keys}
        if not r and ready is not None:
            ready()
        if r:
            out.append(row)
            shown = ", ".join(f"{k} {v:.0f}" for k, v in row.items() if isinstance(v, int | float))
            console.print(f"  {name} round {r}/{rounds}: {shown}", highlight=False)
    return out


def ratio(rounds: list[dict[str, Any]], top: str, bottom: str) -> float | None:
    if any(r.get(top) is None or not r.get(bottom) for r in rounds):
        return None
    return statistics.median(r[top] / r[bottom] for r in rounds)


def median(rounds: list[dict[str, Any]], key: str) -> float | None:
    if any(r.get(key) is None for r in rounds):
        return None
    return statistics.median(r[key] for r in rounds)


def loop_report(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    table = Table(
        title=f"Agent loop, per model turn: median of {len(rounds)} interleaved rounds "
        "(10 turns: 9 read-only tool calls + final answer, instant model)"
    )
    for col in ("row", "us/turn", "vs LangGraph, same store", "goal", "vs SQLite commit"):
        table.add_column(col, justify="left" if col == "row" else "right")
    result: dict[str, Any] = {"us": {}, "ratios": {}}
    for key, label, baseline, goal in LOOP_ROWS:
        us = median(rounds, key)
        if us is None:
            table.add_row(label, "not installed", "-", "-", "-")
            continue
        vs = ratio(rounds, key, baseline) if key != baseline else None
        vs_commit = ratio(rounds, key, "commit")
        result["us"][key] = us
        result["ratios"][f"{key}/{baseline}"] = vs
        result["ratios"][f"{key}/commit"] = vs_commit
        met = "" if goal is None or vs is None else (" met" if vs <= goal else " NOT met")
        table.add_row(
            label,
            f"{us:,.0f}",
            "-" if vs is None else f"{vs:.2f}",
            "-" if goal is None else f"<= {goal:.2f}{met}",
            "-" if vs_commit is None else f"{vs_commit:.2f}",
        )
    result["us"]["commit"] = median(rounds, "commit")
    table.add_row(
        "SQLite durable commit (WAL, FULL)", f"{result['us']['commit']:,.0f}", "", "", "1.00"
    )
    console.print(table)
    return result


def growth_report(turns: int) -> dict[str, float]:
    console.print(f"growth: one thread to {turns} turns ...")
    growth = {"turns": float(turns), **loop.growth(turns)}
    met = "met" if growth["ratio"] < 1.3 else "NOT met"
    console.print(
        f"Growth (default renderer, 16k window, MemoryStore): median turn "
        f"{growth['turn_10_us']:,.0f} us at turns 1-10, {growth['turn_1000_us']:,.0f} us at the "
        f"last 10 of {turns}: ratio {growth['ratio']:.2f} (goal < 1.3: {met})",
        highlight=False,
    )
    return growth


def storage_report(tmpdir: Path, sizes: tuple[int, ...]) -> dict[str, Any]:
    table = Table(title="Storage: one thread, 1 KB tool result per turn (database file size)")
    for col in ("turns", "Threadline SQLite", "LangGraph SqliteSaver", "LangGraph / Threadline"):
        table.add_column(col, justify="right")
    out: dict[str, Any] = {}
    for turns in sizes:
        tl = storage.threadline_bytes(tmpdir, turns)
        lg = storage.langgraph_bytes(tmpdir, turns)
        out[str(turns)] = {"threadline": tl, "langgraph": lg, "ratio": lg / tl if lg else None}
        table.add_row(
            str(turns),
            f"{tl / 1e6:.2f} MB",
            "not installed" if lg is None else f"{lg / 1e6:.2f} MB",
            "-" if lg is None else f"{lg / tl:.1f}x" + (" (goal > 50x)" if turns >= 300 else ""),
        )
    console.print(table)
    return out


class Heap:
    """The heap frozen once, as bench/concurrency.py and `threadline worker` do it
    (`threadline.settle_heap`), unless `enabled` is False (`--no-settle`)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.frozen = 0  # objects in the permanent generation, once frozen

    def settle(self) -> None:
        if self.enabled and not self.frozen:
            self.frozen = settle_heap()

    @property
    def shown(self) -> str:
        return f"heap frozen: {self.frozen} objects" if self.frozen else "heap not frozen"


def concurrency_report(tmpdir: Path, rounds: int, threads: int, heap: Heap) -> dict[str, Any]:
    measures = {
        "grouped": lambda: concurrency.run(tmpdir, threads, 0.005),
        "alone": lambda: concurrency.run(tmpdir, threads, 0.0),
    }
    flat = [
        {f"{k}.{m}": v for k, res in row.items() for m, v in res.items()}
        for row in rounds_of(measures, rounds, "concurrency", heap.settle)
    ]
    med = {key: median(flat, key) for key in flat[0]}
    per_turn = med["grouped.commits_per_turn"] or 0.0
    met = "met" if per_turn < 0.25 else "NOT met"
    console.print(
        f"Concurrency ({threads} threads at once, SQLite FULL, median of {rounds} rounds, "
        f"{heap.shown}): "
        f"{per_turn:.3f} commits (fsyncs) per turn with group commit (goal < 0.25: {met}), "
        f"{med['alone.commits_per_turn']:.3f} with it off; throughput "
        f"{ratio(flat, 'grouped.turns_per_s', 'alone.turns_per_s') or 0:.2f}x; wait of a "
        f"grouped append (arrival to COMMIT) median {med['grouped.p50_wait_ms']:.1f} ms, p99 "
        f"{med['grouped.p99_wait_ms']:.1f} ms, longest {med['grouped.longest_wait_ms']:.1f} ms "
        f"(one commit interval: window 5 ms + a group transaction of "
        f"{med['grouped.commit_ms']:.1f} ms on average)",
        highlight=False,
    )
    # The wait goal, per append against an interval of its own (the window and its own
    # group's transaction: bench/concurrency.py), at its worst over the rounds.
    over = max(row["grouped.over_share"] for row in flat)
    longest = max(row["grouped.own_intervals"] for row in flat)
    console.print(
        f"  grouped appends that waited longer than an interval of their own: {over:.1%} at "
        f"most in a round; the longest {longest:.2f} of its own (goal <= 1: "
        f"{'met' if longest <= 1.0 else 'NOT met'})",
        highlight=False,
    )
    return {"median": med, "rounds": flat, "heap_frozen": heap.frozen}


def postgres_concurrency_report(rounds: int, threads: int, heap: Heap) -> dict[str, Any]:
    """The same threads on PostgreSQL, grouping on and off: round trips per turn, waits."""
    unreachable = concurrency.postgres_unreachable()
    if unreachable is not None:
        console.print(f"Concurrency on PostgreSQL: skipped ({unreachable})", highlight=False)
        return {"skipped": unreachable}
    measures = {
        "grouped": lambda: concurrency.run_postgres(threads, True),
        "alone": lambda: concurrency.run_postgres(threads, False),
    }
    flat = [
        {f"{k}.{m}": v for k, res in row.items() for m, v in res.items()}
        for row in rounds_of(measures, rounds, "concurrency on PostgreSQL", heap.settle)
    ]
    med = {key: median(flat, key) or 0.0 for key in flat[0]}
    console.print(
        f"Concurrency ({threads} threads at once, PostgreSQL, median of {rounds} rounds, "
        f"{heap.shown}): "
        f"{med['grouped.round_trips_per_turn']:.3f} round trips per turn with group commit "
        f"({med['grouped.append_round_trips_per_turn']:.3f} of them appends'), "
        f"{med['alone.round_trips_per_turn']:.3f} with it off "
        f"({med['alone.append_round_trips_per_turn']:.3f}); throughput "
        f"{ratio(flat, 'grouped.turns_per_s', 'alone.turns_per_s') or 0:.2f}x; wait of an "
        f"append (arrival to answer) median {med['grouped.p50_wait_ms']:.1f} ms, p99 "
        f"{med['grouped.p99_wait_ms']:.1f} ms, longest {med['grouped.longest_wait_ms']:.1f} ms "
        f"(off: {med['alone.p50_wait_ms']:.1f}, {med['alone.p99_wait_ms']:.1f}, "
        f"{med['alone.longest_wait_ms']:.1f} ms); a group's round trip "
        f"{med['grouped.group_ms']:.1f} ms on average; turns/s {med['grouped.turns_per_s']:.0f} "
        f"(off: {med['alone.turns_per_s']:.0f}); a message waking a finished thread "
        f"{med['grouped.wake_round_trips_per_message']:.3f} round trips "
        f"({med['grouped.wake_append_round_trips_per_message']:.3f} of them its append's; "
        f"off: {med['alone.wake_round_trips_per_message']:.3f}, "
        f"{med['alone.wake_append_round_trips_per_message']:.3f})",
        highlight=False,
    )
    return {"median": med, "rounds": flat, "heap_frozen": heap.frozen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved measurement rounds")
    parser.add_argument("--loops", type=int, default=20, help="10-turn loops per figure per round")
    parser.add_argument("--growth-turns", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=64, help="concurrent threads")
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts")
    parser.add_argument("--quick", action="store_true", help="few rounds, short runs (CI smoke)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--no-settle", action="store_true", help="never freeze the heap (settle_heap)"
    )
    args = parser.parse_args()
    heap = Heap(enabled=not args.no_settle)
    sizes = (100, 300)
    if args.quick:
        args.rounds, args.loops = 2, 3
        args.growth_turns = min(args.growth_turns, 100)
        args.threads = min(args.threads, 16)
        sizes = (30,)
    parts = [p for p in args.only.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}")
    results: dict[str, Any] = {"python": sys.version.split()[0], "quick": args.quick}
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        if "loop" in parts:
            rounds = rounds_of(loop_measures(tmpdir, args.loops), args.rounds, "loop")
            results["loop"] = loop_report(rounds) | {"rounds": rounds}
        if "growth" in parts:
            results["growth"] = growth_report(args.growth_turns)
        if "storage" in parts:
            results["storage"] = storage_report(tmpdir, sizes)
        if "concurrency" in parts:
            results["concurrency"] = concurrency_report(
                tmpdir, max(1, args.rounds // 2), args.threads, heap
            )
        if "concurrency-pg" in parts:
            results["concurrency_postgres"] = postgres_concurrency_report(
                max(1, args.rounds // 2), args.threads, heap
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
