"""`threadline eval`: function-calling accuracy of any model on BFCL and When2Call.

    threadline eval --suite bfcl --category simple_python,irrelevance --limit 50
    threadline eval --suite when2call --model local:smollm2 --no-grammar --json

Data is read from `../shared/data` (relative to the current directory) or `--data`; when
it is absent the command says where it looked and exits 0 without running (a skip, not
a failure). `live_simple` is BFCL's held-out category: it is reported, and flagged as such.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import ConfigError
from ..evals import (
    BFCL_CATEGORIES,
    WHEN2CALL_CATEGORIES,
    WHEN2CALL_CLASSES,
    CaseResult,
    CategorySummary,
    EvalDataMissing,
    EvalReport,
    load_bfcl,
    load_when2call,
    resolve_data_dir,
    run_eval,
)
from ..evals.runner import Case
from ..models.base import Model
from .common import app, command, console, err_console, run_async, settings
from .context import ModelOpt

__all__ = ["eval_command", "with_grammar_off"]

_DEFAULT_BFCL = "simple_python,multiple,parallel,irrelevance"


def with_grammar_off(spec: str) -> str:
    """The model spec with the local grammar constraint turned off.

    Raises:
        ConfigError: `--no-grammar` was asked of a model that is not local.
    """
    parts = []
    for part in spec.split(","):
        if not part.strip().startswith("local:"):
            raise ConfigError(f"--no-grammar applies to local models only, not {part!r}")
        parts.append(part + ("&" if "?" in part else "?") + "grammar=off")
    return ",".join(parts)


@command(app, "eval")
def eval_command(
    suite: Annotated[str, typer.Option(help="bfcl or when2call.")] = "bfcl",
    category: Annotated[
        str | None,
        typer.Option(
            help=f"Comma-separated categories. BFCL: {', '.join(BFCL_CATEGORIES)} (default "
            f"{_DEFAULT_BFCL}); When2Call: {', '.join(WHEN2CALL_CATEGORIES)} (default all).",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="At most this many cases per category (the first ones, in file order).",
        ),
    ] = None,
    model: ModelOpt = None,
    no_grammar: Annotated[
        bool,
        typer.Option(
            "--no-grammar",
            help="Local models: sample without the intent grammar.",
        ),
    ] = False,
    data: Annotated[
        str | None,
        typer.Option(
            help="Data directory (default ../shared/data, relative to the current directory).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    concurrency: Annotated[
        int,
        typer.Option(
            min=1,
            help="Requests in flight at once (remote models).",
        ),
    ] = 1,
) -> None:
    """Score a model's intents on public function-calling data, per category."""
    from ..models.registry import resolve_model

    cfg = settings()
    spec = model or cfg.model
    if no_grammar:
        spec = with_grammar_off(spec)
    data_dir = resolve_data_dir(data)
    cases = _load(suite, category, data_dir, limit)
    if cases is None:
        return
    resolved = resolve_model(spec, local_repack=cfg.local_repack)
    report = run_async(_run(resolved, cases, suite, concurrency, quiet=as_json))
    if as_json:
        meta = {"model_spec": spec, "limit_per_category": limit, "data": str(data_dir)}
        print(json.dumps({**meta, **report.as_dict()}, indent=2))
    else:
        console.print(report_table(report))


def _load(suite: str, category: str | None, data_dir: Path, limit: int | None) -> list[Case] | None:
    """The cases to run, or None (after saying why) when the data is absent."""
    wanted = [c.strip() for c in (category or "").split(",") if c.strip()]
    try:
        if suite == "bfcl":
            cases: list[Case] = []
            for name in wanted or _DEFAULT_BFCL.split(","):
                cases.extend(load_bfcl(data_dir, name, limit))
            return cases
        if suite == "when2call":
            return list(
                load_when2call(data_dir, tuple(wanted) if wanted else WHEN2CALL_CATEGORIES, limit)
            )
    except EvalDataMissing as exc:
        err_console.print(f"[yellow]skipped:[/] {exc}", highlight=False)
        return None
    raise ConfigError(f"unknown suite {suite!r}; use bfcl or when2call")


async def _run(
    model: Model, cases: list[Case], suite: str, concurrency: int, *, quiet: bool
) -> EvalReport:
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[accuracy]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=quiet,
    )
    done = {"n": 0, "ok": 0}
    with progress:
        task = progress.add_task(f"{suite} {model.model_id}", total=len(cases), accuracy="")

        def advance(result: CaseResult) -> None:
            done["n"] += 1
            done["ok"] += result.correct
            progress.update(task, advance=1, accuracy=f"acc {done['ok'] / done['n']:.0%}")

        return await run_eval(model, cases, suite=suite, concurrency=concurrency, on_result=advance)


def report_table(report: EvalReport) -> Table:
    """Accuracy per category, with schema validity, invalid outputs and provider errors;
    BFCL adds the gold answers the strict validator rejects, When2Call what class the moves
    fell in (the four When2Call classes) and the paper's summary metrics as a caption."""
    table = Table(title=f"{report.suite} · {report.model} · {report.seconds:.0f}s")
    # A narrow terminal folds names and figures onto more lines; none ends in "…".
    table.add_column("category", overflow="fold")
    for column in ("n", "accuracy", "schema-valid", "invalid", "errors"):
        table.add_column(column, justify="right", overflow="fold")
    if report.suite == "bfcl":
        table.add_column("gold rejected", justify="right", overflow="fold")
    classes = WHEN2CALL_CLASSES if report.suite == "when2call" else ()
    for name in classes:
        table.add_column(f"→{name}", justify="right", overflow="fold")
    summaries = list(report.categories.values())
    for summary in summaries:
        label = summary.category + (" (held out)" if summary.held_out else "")
        table.add_row(label, *_cells(report, [summary], classes))
    if len(summaries) > 1:
        table.add_row("all", *_cells(report, summaries, classes), style="bold")
    if classes:
        metrics = report.as_dict(cases=False)["metrics"]
        rate = metrics["tool_hallucination_rate"]
        table.caption = f"macro F1 {metrics['macro_f1']:.3f} · tool hallucination " + (
            "n/a" if rate is None else f"{rate:.0%} of {metrics['no_tool_cases']} no-tool cases"
        )
    return table


def _cells(
    report: EvalReport, summaries: list[CategorySummary], classes: tuple[str, ...]
) -> list[str]:
    n = sum(s.n for s in summaries)
    cells = [
        str(n),
        f"{sum(s.correct for s in summaries) / n:.1%}" if n else "-",
        f"{sum(s.valid for s in summaries) / n:.1%}" if n else "-",
        str(sum(s.invalid for s in summaries)),
        str(sum(s.errors for s in summaries)),
    ]
    if report.suite == "bfcl":
        cells.append(str(sum(s.gold_rejected for s in summaries)))
    cells.extend(str(sum(s.predicted.get(name, 0) for s in summaries)) for name in classes)
    return cells
