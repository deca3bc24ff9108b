"""Schedule commands: cron ticks that launch threads (`threadline.schedules`).

    threadline schedules add standup --cron "0 9 * * 1-5" --tz Europe/Paris \\
        --agent app.py:agent --message "Post the stand-up summary" [--missed catch-up] [--to slack]
    threadline schedules list
    threadline schedules pause standup | resume standup | remove standup

Written once against `api.SchedulesAPI`: the local store's schedules, or a server's with
`--server URL`. Workers (`threadline worker`) and servers fire the ticks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, TypeVar

import typer
from rich.markup import escape

from ..errors import ConfigError
from ..wire import ScheduleBody, ScheduleOut
from .api import SchedulesAPI, open_schedules
from .common import app, command, console, run_async, settings
from .core import ServerOpt

__all__ = ["schedules_app"]

schedules_app = typer.Typer(
    help="Cron schedules that launch threads (fired by workers, once per tick).",
    no_args_is_help=True,
)
app.add_typer(schedules_app, name="schedules")

T = TypeVar("T")


def _with(server: str | None, act: Callable[[SchedulesAPI], Awaitable[T]]) -> T:
    async def go() -> T:
        api = open_schedules(server, settings())
        try:
            return await act(api)
        finally:
            await api.aclose()

    return run_async(go())


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}Z" if value else "-"


def _describe(s: ScheduleOut) -> str:
    state = "paused" if s.paused else f"next {_when(s.next_tick)}"
    return f"{s.name}: {s.cron} ({s.timezone}) -> {s.agent}; {state}"


@command(schedules_app, "add")
def add(
    name: Annotated[str, typer.Argument(help="Unique name (letters, digits, . _ -).")],
    cron: Annotated[
        str, typer.Option("--cron", help='Cron expression, e.g. "0 9 * * 1-5" (seconds last).')
    ],
    agent: Annotated[str, typer.Option("--agent", "-a", help="Agent name or path.py:name.")],
    message: Annotated[str, typer.Option("--message", "-m", help="Each thread's first message.")],
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone of the expression.")] = "UTC",
    missed: Annotated[
        str,
        typer.Option("--missed", help="Ticks no worker was up for: skip, or catch-up (once)."),
    ] = "skip",
    to: Annotated[
        str | None, typer.Option("--to", help="Channel each final answer goes to.")
    ] = None,
    server: ServerOpt = None,
) -> None:
    """Add a schedule; its first tick is the first one after now."""
    if missed not in ("skip", "catch-up"):
        raise ConfigError(f"--missed {missed!r}: use skip or catch-up")
    spec = ScheduleBody(
        name=name,
        cron=cron,
        agent=agent,
        message=message,
        timezone=tz,
        missed="catch-up" if missed == "catch-up" else "skip",
        to=to,
    )
    out = _with(server, lambda api: api.add_schedule(spec))
    console.print(f"added {escape(_describe(out))}", highlight=False, soft_wrap=True)


@command(schedules_app, "list")
def list_(server: ServerOpt = None) -> None:
    """Every schedule with its next tick and last firing."""
    items = _with(server, lambda api: api.list_schedules())
    if not items:
        console.print("no schedules")
        return
    for s in items:
        extra = f"missed: {s.missed}; to: {s.to or '-'}; last thread: {s.last_thread_id or '-'}"
        console.print(escape(f"{_describe(s)}; {extra}"), highlight=False, soft_wrap=True)


@command(schedules_app, "remove")
def remove(name: str, server: ServerOpt = None) -> None:
    """Remove a schedule (the threads it launched stay)."""
    _with(server, lambda api: api.remove_schedule(name))
    console.print(f"removed {escape(name)}", highlight=False)


@command(schedules_app, "pause")
def pause(name: str, server: ServerOpt = None) -> None:
    """Stop firing until resumed."""
    out = _with(server, lambda api: api.pause_schedule(name))
    console.print(escape(_describe(out)), highlight=False, soft_wrap=True)


@command(schedules_app, "resume")
def resume(name: str, server: ServerOpt = None) -> None:
    """Fire again from the next tick (ticks missed while paused never fire)."""
    out = _with(server, lambda api: api.resume_schedule(name))
    console.print(escape(_describe(out)), highlight=False, soft_wrap=True)
