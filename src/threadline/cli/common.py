"""What every CLI command shares: the app, settings, runtime assembly and error handling."""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from ..errors import ThreadlineError
from ..heap import settle_heap
from ..settings import Settings

__all__ = [
    "LockedOpt",
    "ServedAgentsOpt",
    "ThreadIdArg",
    "app",
    "command",
    "console",
    "err_console",
    "fail",
    "handle_errors",
    "run_async",
    "settle",
    "threads_app",
]

app = typer.Typer(
    name="threadline",
    help="Threadline: run, inspect and steer LLM agent threads.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
threads_app = typer.Typer(help="Inspect and manage threads.", no_args_is_help=True)
app.add_typer(threads_app, name="threads")

console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear line on stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn Threadline errors and bad input into one line and exit code 1 (2 for usage)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except ThreadlineError as exc:
            raise fail(str(exc)) from None
        except BrokenPipeError:  # the reader stopped (`| head`): end quietly, as rich does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(1) from None
        except (ValueError, OSError) as exc:
            raise fail(f"{type(exc).__name__}: {exc}") from None

    return wrapper


def command(
    group: typer.Typer, name: str | None = None
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Declare a command of `group` (named `name`, else after the function) that reports
    errors as every command does (`handle_errors`): how each command of the CLI is added."""

    def add(fn: Callable[..., T]) -> Callable[..., T]:
        return group.command(name)(handle_errors(fn))

    return add


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def settings(locked: bool = False) -> Settings:
    """The settings, read from the environment when a command starts (never at import).

    `locked` (the `--locked` flag) turns on release mode for this process: prompts and tool
    schemas must match threadline.lock, as with THREADLINE_RELEASE=1.
    """
    cfg = Settings()
    return cfg.model_copy(update={"release": True}) if locked else cfg


def settle(cfg: Settings) -> str:
    """Freeze the objects start-up made (`threadline.settle_heap`), once a long-running
    command is ready, unless THREADLINE_GC_FREEZE=0; the phrase its ready line ends with."""
    if not cfg.gc_freeze:
        return "heap not frozen (THREADLINE_GC_FREEZE=0)"
    return f"{settle_heap():,} start-up objects frozen"


LockedOpt = Annotated[
    bool,
    typer.Option(
        "--locked",
        help="Refuse to start unless prompts and tool schemas match "
        "threadline.lock (like THREADLINE_RELEASE=1).",
    ),
]


ThreadIdArg = Annotated[str, typer.Argument(help="Thread id.")]

ServedAgentsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--agent",
        "-a",
        help="Agent reference path.py:name (repeatable). Default: the example agents.",
    ),
]
"""The agents a long-running process (server, worker) advances."""


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()
