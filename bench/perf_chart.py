"""The chart of docs/performance.md: tokens against the raw body, from a results file.

Reads what `bench/context_tokens.py --json FILE` wrote and draws, per form, the tokens sent
as a share of the raw chat-completions body (all runs together, and the per-run range),
with the goals (0.70 overall, never above 1.0 on a run) as lines; a second panel shows the
prompt-cache prefix share. Needs matplotlib (the `charts` extra).

Run: python bench/perf_chart.py tokens.json docs/performance-tokens.png
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tokens", type=Path, help="context_tokens.py --json output")
    parser.add_argument("out", type=Path, help="the PNG to write")
    args = parser.parse_args()
    data = json.loads(args.tokens.read_text())
    draw(data.get("tokens", data), args.out)


if __name__ == "__main__":
    main()
