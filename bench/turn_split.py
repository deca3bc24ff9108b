"""Where a pipelined SQLite FULL turn waits: the loop's time split by what it waits for.

bench/loop.py's `turn_accounting` splits a turn into the event loop's thread on a CPU,
runnable and blocked. This splits the same loop (10 model turns, an instant model, the
default renderer or a constant context) by what the loop is doing, timed on the loop's
thread with `perf_counter` around the store's pieces (patched in this process only; the
library is not changed), and times each `COMMIT` behind the loop on the flusher's thread:

  * statements: an append's statements run inline inside `BEGIN IMMEDIATE` (its `COMMIT`
    goes behind the loop);
  * inline appends: appends run whole on the loop, `COMMIT` (the fsync) included (not
    pipelined, or the final answer when nothing is in flight);
  * hand-off: the loop blocked (the GIL released) until the flusher's thread has begun the
    `COMMIT` (`Behind._hand_off`: `began.acquire`);
  * depth wait: an append waiting at `pipeline_depth` for the `COMMIT` in flight to land;
  * join: the runtime waiting for commits in flight (the final answer, the end of a
    launch);
  * the rest: the loop running the turn (render, decide, tools, the events' JSON, the
    fold), by difference.

Per `COMMIT` behind the loop, on the flusher's thread: `wake` (from the hand-off to the
flusher running Python with the GIL), `commit` (its `COMMIT` statement as Python sees it:
the fsync, plus taking the GIL back after it), and `to loop` (from the `COMMIT`'s return to
the loop settling it, `Behind._land`). A `COMMIT` taking longer than SQLite's own
(`sqlite_commit_us` in the same round) is the flusher waiting for the GIL after the fsync.

    python bench/turn_split.py [ROUNDS] [LOOPS] [DEPTHS]

DEPTHS: `pipeline_depth`s, comma-separated (default 2,1,0); 0 is not pipelined.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from threadline import Runtime, SQLiteStore
from threadline import pipeline as pipeline_module
from threadline.stores import behind as behind_module
from threadline.stores import sqlite as sqlite_module

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loop  # bench/ modules, next to this file
import overhead

LOOP_PARTS = ("statements", "inline", "hand-off", "depth wait", "join")


class Probe:
    """Time accumulated by part on the loop's thread, and each behind-the-loop `COMMIT`'s
    moments (hand-off, flusher start, `COMMIT` returned, landed), paired in order."""

    def __init__(self) -> None:
        self.loop_thread = threading.get_ident()
        self.spent = dict.fromkeys(LOOP_PARTS, 0.0)
        self.inner = 0.0  # statements, inline appends and hand-offs: nested in the waits
        self.handed = 0.0  # the latest hand-off began
        self.started = 0.0  # the flusher's latest COMMIT began (0: told since)
        self.moments: dict[int, list[float]] = {}  # id(Commit): handed, began, returned
        self.landed: list[tuple[list[float], float]] = []

    def add(self, part: str, seconds: float, *, inner: bool) -> None:
        self.spent[part] += seconds
        if inner:
            self.inner += seconds

    def commits(self) -> dict[str, list[float]]:
        """Per `COMMIT` behind the loop, in seconds: `wake` (handed off by the loop: to the
        flusher running it), `commit` and `to loop`."""
        out: dict[str, list[float]] = {"wake": [], "commit": [], "to loop": []}
        for (handed, began, returned), landed in self.landed:
            out["wake"].append(began - handed)
            out["commit"].append(returned - began)
            out["to loop"].append(landed - returned)
        return out


@contextmanager
def probed(probe: Probe) -> Iterator[None]:
    """Patch the store's pieces to time them into `probe`; restored on exit."""
    drive = sqlite_module._drive
    behind = behind_module.Behind
    hand_off, flush, land, tell = behind._hand_off, behind._flush, behind._land, behind_module._tell
    enqueue, join = behind.enqueue, pipeline_module.Pipeline.join

    def timed_drive(conn: Any, plan: Any, tx: Any, *, commit: bool = True) -> Any:
        if threading.get_ident() != probe.loop_thread:
            return drive(conn, plan, tx, commit=commit)
        started = time.perf_counter()
        try:
            return drive(conn, plan, tx, commit=commit)
        finally:
            part = "statements" if not commit else "inline"
            probe.add(part, time.perf_counter() - started, inner=True)

    def timed_hand_off(self: Any, *args: Any) -> None:
        started = probe.handed = time.perf_counter()
        try:
            hand_off(self, *args)
        finally:
            probe.add("hand-off", time.perf_counter() - started, inner=True)

    def timed_flush(self: Any, *args: Any) -> None:
        probe.started = time.perf_counter()
        flush(self, *args)

    def timed_tell(loop: Any, land: Any, job: Any, error: Any) -> None:
        if probe.started:  # not a transaction sent to the store's thread (the lock taken)
            probe.moments[id(job)] = [probe.handed, probe.started, time.perf_counter()]
        probe.started = 0.0
        tell(loop, land, job, error)

    def timed_land(self: Any, job: Any) -> None:
        moments = probe.moments.pop(id(job), None)
        if job is self._carrying and moments is not None:
            probe.landed.append((moments, time.perf_counter()))
        land(self, job)

    def waited(part: str, call: Callable[..., Any]) -> Callable[..., Any]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started, inner = time.perf_counter(), probe.inner
            try:
                return await call(*args, **kwargs)
            finally:
                nested = probe.inner - inner
                probe.add(part, time.perf_counter() - started - nested, inner=False)

        return timed

    patches: list[tuple[Any, str, Any]] = [
        (sqlite_module, "_drive", timed_drive),
        (behind, "_hand_off", timed_hand_off),
        (behind_module, "_tell", timed_tell),
        (behind, "_flush", timed_flush),
        (behind, "_land", timed_land),
        (behind, "enqueue", waited("depth wait", enqueue)),
        (pipeline_module.Pipeline, "join", waited("join", join)),
    ]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, patched in patches:
        setattr(owner, name, patched)
    try:
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def split(tmpdir: Path, renderer: bool, loops: int, depth: int) -> dict[str, float]:
    """One run of `loops` launches on a new SQLite FULL file: microseconds a model turn by
    part (`depth` 0: not pipelined), and the flusher's moments a `COMMIT` behind the loop."""

    async def go() -> dict[str, float]:
        path = tmpdir / f"split-{time.monotonic_ns()}.db"
        store = SQLiteStore(path, pipelined=depth > 0, pipeline_depth=max(depth, 1))
        the_agent = loop.agent(renderer)
        rt = Runtime(store, agents=[the_agent])
        probe = Probe()
        try:
            await rt.launch(the_agent, "warm up")  # connections opened, caches filled
            commits = store.stats.commits
            switches = _switches()
            cpu, runnable = loop._schedule()
            with probed(probe):
                started = time.perf_counter()
                for _ in range(loops):
                    await rt.launch(the_agent, "look up abc")
                wall = time.perf_counter() - started
            cpu2, runnable2 = loop._schedule()
            commits = store.stats.commits - commits
            switched = {k: v - switches.get(k, 0) for k, v in _switches().items()}
        finally:
            await store.close()
        turns = loops * loop.TURNS
        row = {"wall": wall / turns * 1e6}
        row |= {part: probe.spent[part] / turns * 1e6 for part in LOOP_PARTS}
        row["rest"] = row["wall"] - sum(row[part] for part in LOOP_PARTS)
        row["loop on a CPU"] = (cpu2 - cpu) / turns * 1e6
        row["loop runnable (the load)"] = (runnable2 - runnable) / turns * 1e6
        row["commits"] = commits / turns
        row["loop's sleeps"] = switched.get("loop", 0) / turns
        row["flusher's sleeps"] = switched.get("flusher", 0) / turns
        for name, values in probe.commits().items():
            row[f"flusher {name}"] = statistics.median(values) * 1e6 if values else 0.0
        return row

    return asyncio.run(go())


def _switches() -> dict[str, int]:
    """Voluntary context switches so far (Linux; empty elsewhere) of the loop's thread and
    the flusher's: each one a sleep and a wake-up, which a shared machine charges for."""
    out = {}
    for thread in threading.enumerate():
        name = "loop" if thread is threading.main_thread() else thread.name
        if name not in ("loop", "threadline-sqlite-commit"):
            continue
        try:
            with open(f"/proc/self/task/{thread.native_id}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        out["loop" if name == "loop" else "flusher"] = int(line.split()[1])
        except OSError:
            pass
    return out


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    loops = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    depths = [int(d) for d in sys.argv[3].split(",")] if len(sys.argv) > 3 else [2, 1, 0]
    configs: list[tuple[str, Callable[[Path], dict[str, float]]]] = [
        (f"depth {d}" if d else "not pipelined", _measure(d, loops)) for d in depths
    ]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in configs}
    commit_us: list[float] = []
    langgraph: list[float | None] = []
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds + 1):  # round 0 warms up, dropped
            turn = r % len(configs)
            lg = loop.langgraph_us(Path(tmp), True, loops)
            for name, measure in configs[turn:] + configs[:turn]:
                row = measure(Path(tmp))
                if r:
                    if lg is not None:
                        row["vs LangGraph + SqliteSaver"] = row["wall"] / lg
                    runs[name].append(row)
            if r:
                langgraph.append(lg)
                commit_us.append(overhead.sqlite_commit_us(Path(tmp) / f"c-{r}.db"))
                loads.append(os.getloadavg()[0])
    names = list(runs)
    keys = list(runs[names[0]][0])
    print(
        f"SQLite FULL, default renderer, per model turn (us; commits a turn): medians of "
        f"{rounds} interleaved rounds of {loops} loops; SQLite's own durable commit "
        f"{statistics.median(commit_us):.0f} us; LangGraph + SqliteSaver "
        f"{statistics.median(lg or 0.0 for lg in langgraph):,.0f} us a turn; load average "
        f"{min(loads):.1f}-{max(loads):.1f}"
    )
    width = max(13, *(len(n) for n in names))
    print(f"| {'part':<28} | " + " | ".join(f"{n:>{width}}" for n in names) + " |")
    print(f"|{'-' * 30}|" + "|".join("-" * (width + 2) for _ in names) + "|")
    for key in keys:
        values = [statistics.median(row[key] for row in runs[n]) for n in names]
        counts = key in ("commits", "vs LangGraph + SqliteSaver") or key.endswith("sleeps")
        shown = [f"{v:>{width}.2f}" if counts else f"{v:>{width},.0f}" for v in values]
        print(f"| {key:<28} | " + " | ".join(shown) + " |")


def _measure(depth: int, loops: int) -> Callable[[Path], dict[str, float]]:
    return lambda tmp: split(tmp, True, loops, depth)


if __name__ == "__main__":
    main()
