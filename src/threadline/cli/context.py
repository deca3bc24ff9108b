"""Context and prompt commands: build, render, profile, prompts test.

threadline build [--agent REF]... [--check]      validate prompts/tools/models, write the lock
threadline render ID [--format compact|messages] [--json]
threadline profile ID [--html F] [--png F]       tokens per section of the next call
threadline prompts test [--agent REF]... [--model SPEC]
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..bootstrap import default_agent_refs, load_agents, open_runtime
from ..context.base import Rendered
from ..context.renderer import Renderer
from ..errors import ConfigError, PromptError, ThreadlineError
from ..events import Thread
from .api import agent_of
from .common import ThreadIdArg, app, command, console, err_console, run_async, settings

__all__ = ["prompts_app"]

prompts_app = typer.Typer(help="Prompt templates: regression tests.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")

AgentRefs = Annotated[
    list[str] | None,
    typer.Option("--agent", "-a", help="Agent reference path.py:name (repeatable)."),
]
Format = Annotated[
    str | None,
    typer.Option("--format", "-f", help="compact or messages (default: the agent's own)."),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(help="provider:model; default THREADLINE_MODEL, else local:smollm2."),
]
"""The model a command asks instead of the configured one (`prompts test`, `eval`)."""


def _refs(refs: list[str] | None) -> list[str]:
    chosen = refs or default_agent_refs()
    if not chosen:
        raise ConfigError("no agents found; pass --agent path.py:name")
    return chosen


# -- build -------------------------------------------------------------------------------


@command(app)
def build(
    agent: AgentRefs = None,
    lock: Annotated[
        Path | None, typer.Option(help="Lock file (default THREADLINE_LOCK_FILE).")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Verify the lock matches; write nothing.")
    ] = False,
) -> None:
    """Validate every prompt, tool schema and model pin, then write threadline.lock."""
    from ..lockfile import build_lock, check_lock, write_lock

    cfg = settings()
    path = lock or Path(cfg.lock_file)
    loaded = load_agents(_refs(agent))
    root = path.resolve().parent
    if check:
        check_lock(
            cfg.model_copy(update={"lock_file": str(path)}),
            [a for a, _ in loaded.values()],
            locked=True,
            root=root,
        )
        console.print(f"{path}: up to date ({len(loaded)} agents)", highlight=False)
        return
    data, reports = build_lock([(a, ref) for a, ref in loaded.values()], root)
    table = Table("agent", "prompt", "sha256", "tools", "model", "status")
    for r in reports:
        p = r.entry.get("prompt") or {}
        table.add_row(
            r.name,
            f"{p.get('name')}@{p.get('version')}" if p else "(instructions)",
            (p.get("sha256") or r.entry.get("instructions_sha256") or "")[:12],
            str(len(r.entry.get("tools") or {})),
            str(r.entry.get("model") or "-"),
            "[green]ok[/]" if r.ok else "[red]failed[/]",
        )
    console.print(table)
    problems = [f"{r.name}: {p}" for r in reports for p in r.problems]
    if problems:
        for line in problems:
            err_console.print(
                f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True
            )
        raise typer.Exit(1)
    write_lock(path, data)
    console.print(f"wrote {path} (git {data['git_commit'] or 'unknown'})", highlight=False)


# -- render and profile ------------------------------------------------------------------


async def _load(thread_id: str, refs: list[str] | None) -> tuple[Renderer, Thread]:
    loaded = load_agents(refs or [])
    rt = open_runtime(settings(), loaded, with_model=False)
    thread = await rt.store.load(thread_id)
    if thread.agent not in rt.agents:  # the agent reference recorded on the thread
        rt.add_agent(agent_of(thread))
    agent = rt.agent(thread.agent)
    renderer = rt.renderer(agent.name)
    if agent.model is not None:
        renderer.bind(agent.model)
    else:
        # Size the budget for the configured model, as the runtime will before its call.
        from ..models.registry import resolve_model

        # Without a usable model config the agent's own settings decide the budget.
        with contextlib.suppress(ThreadlineError):
            cfg = settings()
            renderer.bind(resolve_model(cfg.model, local_repack=cfg.local_repack))
    return renderer, thread


def _render(renderer: Renderer, thread: Thread, fmt: str | None) -> Rendered | None:
    if fmt is None and renderer.custom is not None:
        return None
    return renderer.render(thread, fmt)


@command(app, "render")
def render_cmd(
    thread_id: ThreadIdArg,
    fmt: Format = None,
    agent: AgentRefs = None,
    as_json: Annotated[bool, typer.Option("--json", help="The context as JSON.")] = False,
) -> None:
    """Print exactly what the thread's next model call receives, with its token count."""
    from ..context.messages import to_openai

    renderer, thread = run_async(_load(thread_id, agent))
    rendered = _render(renderer, thread, fmt)
    context = rendered.context if rendered is not None else renderer.context(thread)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "prompt": {
                        "name": context.prompt_name,
                        "version": context.prompt_version,
                        "sha256": context.prompt_hash,
                    },
                    "input_tokens": context.input_tokens,
                    "max_output_tokens": context.max_output_tokens,
                    "messages": to_openai(context.system, context.messages),
                    "tools": [
                        {"name": t.name, "description": t.description, "parameters": t.parameters}
                        for t in context.tools
                    ],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    typer.echo(context.as_text())
    note = ""
    if rendered is not None and rendered.compaction is not None:
        lo, hi, _ = rendered.compaction
        note = f"; events {lo}-{hi} will be compacted before the call"
    err_console.print(
        f"[dim]{context.input_tokens} input tokens, {context.max_output_tokens} reserved for "
        f"output; prompt {context.prompt_name}@{context.prompt_version or '-'} "
        f"{(context.prompt_hash or '')[:12]}{note}[/]",
        highlight=False,
    )


@command(app)
def profile(
    thread_id: ThreadIdArg,
    fmt: Format = None,
    agent: AgentRefs = None,
    html: Annotated[Path | None, typer.Option(help="Write an HTML chart here.")] = None,
    png: Annotated[
        Path | None, typer.Option(help="Write a PNG chart here (needs the charts extra).")
    ] = None,
) -> None:
    """Tokens per section of the thread's next model call: system, tools, history, retrieved."""
    renderer, thread = run_async(_load(thread_id, agent))
    rendered = _render(renderer, thread, fmt)
    if rendered is None:
        raise ConfigError(
            f"agent {renderer.name} uses a custom renderer; pass --format to profile a "
            "built-in format"
        )
    sections = {k: v for k, v in rendered.sections.items() if v}
    budget = rendered.context.max_output_tokens
    # The whole request as counted for the call (`render` prints the same number): the
    # sections and the chat framing around each message.
    total = rendered.context.input_tokens or sum(sections.values())
    if total > sum(sections.values()):
        sections["framing"] = total - sum(sections.values())
    window = renderer.budget.window
    table = Table(
        "section",
        "tokens",
        "share",
        title=f"thread {thread.id}: {total} input "
        f"tokens of a {window} window ({budget} reserved for output)",
    )
    for name, n in sorted(sections.items(), key=lambda kv: -kv[1]):
        table.add_row(name, str(n), f"{n / max(total, 1):.1%}")
    table.add_row("[dim]free[/]", str(max(window - budget - total, 0)), "")
    console.print(table)
    layout = rendered.layout
    fixed = rendered.sections.get("system", 0) + rendered.sections.get("tools", 0)
    room = max(layout.retrieved_cap, 1)
    share = layout.retrieved_cap / max(renderer.budget.available(fixed + 3), 1)
    retrieval = renderer.settings.retrieval
    console.print(
        f"retrieval share: {rendered.sections.get('retrieved', 0)} of {layout.retrieved_cap} "
        f"tokens used ({rendered.sections.get('retrieved', 0) / room:.0%}); the share is "
        f"{share:.0%} of the room after system, tools and output"
        + (f", {retrieval.split} split" if retrieval else "")
        + (" (results cut to fit it)" if layout.retrieved_reduced else ""),
        highlight=False,
    )
    if html is not None:
        html.write_text(_html_chart(thread.id, sections, window), encoding="utf-8")
        console.print(f"wrote {html}", highlight=False)
    if png is not None:
        _png_chart(png, thread.id, sections)
        console.print(f"wrote {png}", highlight=False)


def _html_chart(thread_id: str, sections: dict[str, int], window: int) -> str:
    """A self-contained HTML bar chart (no scripts, no network)."""
    from html import escape as h

    top = max(sections.values(), default=1)
    rows = "\n".join(
        f'<tr><td>{h(k)}</td><td class="n">{v}</td><td><div class="bar" '
        f'style="width:{400 * v / top:.0f}px"></div></td></tr>'
        for k, v in sorted(sections.items(), key=lambda kv: -kv[1])
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Tokens of thread {h(thread_id)}</title>
<style>body{{font-family:sans-serif}}td{{padding:2px 8px}}.n{{text-align:right}}
.bar{{background:#4a7bd0;height:14px}}</style></head>
<body><h1>Tokens per section: thread {h(thread_id)}</h1>
<p>{sum(sections.values())} input tokens of a {window} window.</p>
<table>{rows}</table></body></html>
"""


def _png_chart(path: Path, thread_id: str, sections: dict[str, int]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from ..errors import MissingExtraError

        raise MissingExtraError("charts", "matplotlib") from None
    items = sorted(sections.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(items) + 1.2))
    ax.barh([k for k, _ in items], [v for _, v in items], color="#4a7bd0")
    ax.set_xlabel("tokens")
    ax.set_title(f"Tokens per section: thread {thread_id}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- prompts test ------------------------------------------------------------------------


@command(prompts_app, "test")
def prompts_test(
    agent: AgentRefs = None,
    model: ModelOpt = None,
) -> None:
    """Run the regression cases stored next to each agent's prompt against a model."""
    from ..models.registry import resolve_model
    from ..prompts import run_cases

    loaded = load_agents(_refs(agent))
    cfg = settings()
    the_model = resolve_model(model or cfg.model, local_repack=cfg.local_repack)
    table = Table("agent", "case", "expected", "got", "result")
    failures = 0
    ran = 0
    for a, _ in loaded.values():
        try:
            results = run_async(run_cases(a, the_model))
        except PromptError as exc:
            raise ThreadlineError(str(exc)) from None
        for r in results:
            ran += 1
            failures += not r.passed
            table.add_row(
                a.name,
                r.case,
                r.expected,
                escape(r.got),
                "[green]pass[/]" if r.passed else "[red]FAIL[/]",
            )
    if not ran:
        raise ConfigError(
            "no regression cases found (put <prompt>.cases.yaml next to the prompt file)"
        )
    console.print(table)
    console.print(f"{ran - failures}/{ran} passed against {the_model.model_id}", highlight=False)
    if failures:
        raise typer.Exit(1)
