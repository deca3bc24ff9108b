"""The charts of docs/performance.md, from a results file.

* Tokens: from what `bench/context_tokens.py --json FILE` wrote, per form, the tokens sent
  as a share of the raw chat-completions body (all runs together, and the per-run range),
  with the goals (0.70 overall, never above 1.0 on a run) as lines; a second panel shows
  the prompt-cache prefix share.
* Storage: from what `bench/overhead.py --only storage --json FILE` wrote, the database
  file after one thread of N turns, Threadline's SQLite file against LangGraph's
  SqliteSaver, per N (log scale: the two grow at different orders), each pair labelled
  with its ratio, and the bytes per turn.

The kind of chart follows the file. Needs matplotlib (the `charts` extra).

Run: python bench/perf_chart.py tokens.json docs/performance-tokens.png
     python bench/perf_chart.py overhead.json docs/performance-storage.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def draw(tokens: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    forms = tokens["forms"]
    keys = list(forms)
    labels = [forms[k]["label"].split(":")[0].replace(" (", "\n(") for k in keys]
    ratios = [forms[k]["ratio"] for k in keys]
    low = [forms[k]["ratio"] - forms[k]["ratio_min"] for k in keys]
    high = [forms[k]["ratio_max"] - forms[k]["ratio"] for k in keys]
    fig, (ax, cache) = plt.subplots(
        1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 1]}, layout="constrained"
    )
    bars = ax.bar(range(len(keys)), ratios, yerr=[low, high], capsize=4, color="#4c78a8")
    bars[0].set_color("#f58518")
    ax.axhline(1.0, color="black", linewidth=1)
    ax.axhline(0.70, color="#54a24b", linestyle="--", linewidth=1)
    ax.text(len(keys) - 0.5, 1.01, "raw body", ha="right", va="bottom", fontsize=8)
    ax.text(len(keys) - 0.5, 0.71, "goal 0.70", ha="right", va="bottom", fontsize=8)
    for x, r in enumerate(ratios):
        ax.text(x, r / 2, f"{r:.3f}", ha="center", color="white", fontsize=9)
    ax.set_xticks(range(len(keys)), labels, fontsize=8)
    ax.set_ylabel("tokens / raw chat-completions body")
    ax.set_title(f"{tokens['runs']} tau-bench airline runs (bars: all runs; whiskers: per run)")
    prefix = tokens.get("prefix", {})
    share = prefix.get("reused_share", 0.0)
    cache.bar([0], [share], color="#4c78a8")
    cache.set_ylim(0, 1.05)
    cache.set_xticks([0], ["default"])
    cache.text(0, share / 2, f"{share:.4f}", ha="center", color="white")
    cache.set_title(f"prefix reused by the next call\n({prefix.get('pairs', 0)} call pairs)")
    fig.savefig(out, dpi=110)


def draw_storage(storage: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    turns = sorted(storage, key=int)
    ours = [storage[t]["threadline"] / 1e6 for t in turns]
    theirs = [(storage[t]["langgraph"] or 0) / 1e6 for t in turns]
    fig, (ax, per) = plt.subplots(
        1, 2, figsize=(10, 4.0), gridspec_kw={"width_ratios": [2, 1]}, layout="constrained"
    )
    x = range(len(turns))
    ax.bar([i - 0.2 for i in x], ours, 0.4, label="Threadline (SQLiteStore)", color="#f58518")
    ax.bar([i + 0.2 for i in x], theirs, 0.4, label="LangGraph + SqliteSaver", color="#4c78a8")
    ax.set_yscale("log")
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        ax.text(i - 0.2, a * 1.1, f"{a:.2f} MB", ha="center", fontsize=8)
        if b:
            ax.text(i + 0.2, b * 1.1, f"{b:.1f} MB\n{b / a:.1f}x", ha="center", fontsize=8)
    ax.set_xticks(list(x), [f"{t} turns" for t in turns])
    ax.set_ylabel("database file (MB, log scale)")
    ax.set_title("one thread, a 1 KB tool result per turn")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_ylim(top=max(theirs + ours) * 4)
    for sizes, color, label in ((ours, "#f58518", "Threadline"), (theirs, "#4c78a8", "LangGraph")):
        if all(sizes):
            kb = [size * 1e3 / int(t) for size, t in zip(sizes, turns, strict=True)]
            per.plot([int(t) for t in turns], kb, "o-", color=color, label=label)
    per.set_yscale("log")
    per.set_xlabel("turns")
    per.set_ylabel("KB per turn (log scale)")
    per.set_title("per turn: flat = linear growth")
    per.legend(fontsize=8)
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="context_tokens.py or overhead.py --json output")
    parser.add_argument("out", type=Path, help="the PNG to write")
    args = parser.parse_args()
    data = json.loads(args.results.read_text())
    if "storage" in data:
        draw_storage(data["storage"], args.out)
    else:
        draw(data.get("tokens", data), args.out)


if __name__ == "__main__":
    main()
