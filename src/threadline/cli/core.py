"""Core commands: run, threads list/show; and how every thread command drives a thread.

`session` opens the threads (local store or server) with a `Printer` fed by them, `drive`
gets a thread to where it stops, `act` does one action on a thread and drives it on, and
`finish` prints where the thread got to and exits with its code. The commands that follow
up on an existing thread (approve, respond, resume, ...) are in cli/follow_up.py.

Exit codes: 0 when the thread is done or waiting for someone (its id is printed), 3 when it
escalated, 4 when it failed, 1 for errors, 2 for bad usage.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar, assert_never

import typer
from rich.markup import escape
from rich.table import Column, Table

from ..composition import children
from ..errors import ConfigError, ThreadlineError
from ..events import BUDGET_SOURCE, Budget, Escalated, Event, Status, Thread
from ..wire import thread_out
from .api import ThreadsAPI, open_threads
from .common import (
    LockedOpt,
    ThreadIdArg,
    app,
    command,
    console,
    err_console,
    run_async,
    settings,
    stdin_is_terminal,
    threads_app,
)
from .display import budget_lines, format_arguments, format_event

__all__ = [
    "AdvanceOpt",
    "AgentOpt",
    "Printer",
    "ServerOpt",
    "act",
    "budget_of",
    "budget_option",
    "call_threads",
    "drive",
    "finish",
    "format_event",
    "next_step",
    "session",
]

T = TypeVar("T")

AgentOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--agent",
        "-a",
        help="Agent reference path.py:name (repeatable); default: the one recorded on the thread.",
    ),
]

ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="THREADLINE_SERVER",
        help="Drive a Threadline server at this URL instead of the local store "
        "(key from THREADLINE_API_KEY).",
    ),
]

AdvanceOpt = Annotated[
    bool, typer.Option("--advance/--no-advance", help="Run the thread on afterwards.")
]


class Printer:
    """Prints each event of the threads it follows once, in seq order: live, as a runtime
    observer (local appends), or when caught up with a loaded thread (remote ones)."""

    def __init__(self) -> None:
        self.shown: dict[str, int] = {}

    def follow(self, thread: Thread | str, *, after: int | None = None) -> None:
        """Print `thread`'s events after `after` (default: after those it has now)."""
        if isinstance(thread, Thread):
            self.shown[thread.id] = thread.next_seq - 1 if after is None else after
        else:
            self.shown[thread] = -1 if after is None else after

    def __call__(self, thread: Thread, events: Sequence[Event]) -> None:
        if thread.id in self.shown:
            self._print(thread.id, events)

    def catch_up(self, thread: Thread) -> Thread:
        """Print what of `thread` was not printed yet; returns it."""
        self.shown.setdefault(thread.id, -1)
        self._print(thread.id, thread.events)
        return thread

    def _print(self, thread_id: str, events: Sequence[Event]) -> None:
        for event in events:
            if event.seq > self.shown[thread_id]:
                console.print(format_event(event), highlight=False, soft_wrap=True)
                self.shown[thread_id] = event.seq


def _note(text: str) -> None:
    err_console.print(f"[yellow]note:[/] {escape(text)}", highlight=False, soft_wrap=True)


@asynccontextmanager
async def session(
    server: str | None, agent_refs: Sequence[str] = (), *, locked: bool = False
) -> AsyncIterator[tuple[ThreadsAPI, Printer]]:
    """The threads interface (the server's or the local store's) and a printer it feeds."""
    printer = Printer()
    api = open_threads(server, settings(locked), agent_refs, observers=[printer], note=_note)
    try:
        yield api, printer
    finally:
        await api.aclose()


def call_threads(server: str | None, call: Callable[[ThreadsAPI], Awaitable[T]]) -> T:
    """Open the threads (`session`), make one `call` on them and close them: its result."""

    async def go() -> T:
        async with session(server) as (api, _):
            return await call(api)

    return run_async(go())


async def drive(api: ThreadsAPI, printer: Printer, thread_id: str, interactive: bool) -> Thread:
    """Get the thread to where it stops, printing what happens; in a terminal answer its
    approval or question and go on, otherwise leave it waiting."""
    while True:
        thread = printer.catch_up(await api.settle(thread_id))
        state = thread.state
        if not interactive:
            return thread
        if thread.status == Status.AWAITING_APPROVAL:
            call = next(c for c in state.pending.values() if c.approval == "requested")
            console.print(
                f"[bold magenta]approve[/] {call.tool}({escape(format_arguments(call.arguments))})?"
            )
            if typer.prompt("approve? [y]es / [n]o", default="y").strip().lower().startswith("y"):
                await api.approve(thread_id, call.call_id, approved=True)
            else:
                comment = typer.prompt("feedback for the agent", default="", show_default=False)
                await api.approve(thread_id, call.call_id, approved=False, comment=comment or None)
        elif thread.status == Status.AWAITING_HUMAN and state.human_request:
            await api.respond(thread_id, state.human_request, typer.prompt("your answer"))
        else:
            return thread


def act(
    server: str | None,
    agent_refs: Sequence[str] | None,
    thread_id: str,
    action: Callable[[ThreadsAPI, Thread], Awaitable[object]],
    *,
    advance: bool = True,
) -> None:
    """Load the thread, `action(api, thread)`, then (unless `advance=False`) get it to where it
    stops, and show where it got to."""

    async def go() -> Thread:
        async with session(server, agent_refs or ()) as (api, printer):
            thread = await api.load(thread_id)
            printer.follow(thread)
            await action(api, thread)
            if advance:
                return await drive(api, printer, thread_id, False)
            return printer.catch_up(await api.load(thread_id))

    finish(run_async(go()))


def next_step(thread_id: str, status: Status, escalation: Escalated | None = None) -> str:
    """What a person does next with a thread with `status` (and, escalated, `escalation`):
    "continue with: COMMAND", or why no command moves it on; "" for a done one.

    The one place that decides it, for every status: `finish` prints it after a command,
    `fork` for the new thread."""
    match status:
        case Status.AWAITING_APPROVAL:
            step = f"threadline approve {thread_id} [--reject --comment TEXT | --instead TEXT]"
        case Status.AWAITING_HUMAN:
            step = f"threadline respond {thread_id} TEXT"
        case Status.ESCALATED if escalation and escalation.details.get("source") == BUDGET_SOURCE:
            if escalation.details.get("scope") == "thread":  # a message or resume: again
                step = (
                    f"threadline raise-budget {thread_id} --budget-usd|--budget-tokens|"
                    f"--budget-calls N (the figures: threadline threads show {thread_id})"
                )
            else:  # a tree's is fixed at launch (docs/composition.md): no command helps
                return (
                    "its budget is spent and fixed at launch, so a message or resume would "
                    f"escalate it again (the figures: threadline threads show {thread_id})"
                )
        case Status.ESCALATED:  # both clear the escalation and its error count
            step = (
                f"threadline message {thread_id} TEXT (tell it how to go on), or "
                f"threadline resume {thread_id} (let it try again)"
            )
        case Status.WAITING:
            step = (
                f"threadline resume {thread_id} once the wait above is over, or leave it to "
                "a `threadline worker`"
            )
        case Status.FAILED:  # `resume` refuses a failed thread; `threads retry` resumes it
            step = f"threadline threads retry {thread_id}"
        case Status.RUNNING | Status.PAUSED:
            step = f"threadline resume {thread_id}"
        case Status.DONE:
            return ""
        case _:
            assert_never(status)
    return f"continue with: {step}"


def finish(thread: Thread) -> None:
    """Print the thread's status and what to do next (`next_step`); exit 3 if it
    escalated, 4 if it failed."""
    status = thread.status
    console.print(f"thread [bold]{thread.id}[/] is [bold]{status.value}[/]", highlight=False)
    hint = next_step(thread.id, status, thread_out(thread).escalation)
    if hint:
        console.print(escape(hint), highlight=False)
    if status == Status.ESCALATED:
        raise typer.Exit(3)
    if status == Status.FAILED:
        raise typer.Exit(4)


@command(app)
def run(
    agent: Annotated[
        str,
        typer.Argument(
            help="path/to/file.py:name or package.module:name (with --server: an agent "
            "the server serves)"
        ),
    ],
    message: Annotated[str, typer.Argument(help="The user's message.")],
    interactive: Annotated[
        bool | None,
        typer.Option(
            "--interactive/--no-interactive",
            help="Ask at approval and question pauses (default: when in a terminal).",
        ),
    ] = None,
    server: ServerOpt = None,
    locked: LockedOpt = False,
    budget_usd: Annotated[float | None, _limit("--budget-usd", "USD", "this thread")] = None,
    budget_tokens: Annotated[int | None, _limit("--budget-tokens", "tokens", "this thread")] = None,
    budget_calls: Annotated[
        int | None, _limit("--budget-calls", "model calls", "this thread")
    ] = None,
    tree_usd: Annotated[float | None, _limit("--tree-budget-usd", "USD", "the tree")] = None,
    tree_tokens: Annotated[int | None, _limit("--tree-budget-tokens", "tokens", "the tree")] = None,
    tree_calls: Annotated[
        int | None, _limit("--tree-budget-calls", "model calls", "the tree")
    ] = None,
) -> None:
    """Launch a thread of AGENT with MESSAGE and run it, printing events as they happen.

    With --server, AGENT is the name of an agent the server serves. The --budget-* and
    --tree-budget-* options replace the agent's budgets for this thread and the tree of
    sub-agent threads it roots (docs/composition.md).
    """
    budget = budget_of(budget_calls, budget_tokens, budget_usd)
    tree_budget = budget_of(tree_calls, tree_tokens, tree_usd)

    async def go() -> Thread:
        async with session(server, [agent], locked=locked) as (api, printer):
            launched = await api.launch(
                agent,
                message,
                metadata={"channel": "cli"},
                budget=budget,
                tree_budget=tree_budget,
            )
            printer.catch_up(await api.load(launched.id))
            return await drive(api, printer, launched.id, _interactive(interactive))

    finish(run_async(go()))


def _limit(flag: str, what: str, whose: str) -> Any:
    return typer.Option(flag, min=0, help=f"At most this many {what} for {whose}.")


def budget_option(flag: str, what: str) -> Any:
    """A `raise-budget` limit option (`run`'s flags, another help)."""
    return typer.Option(flag, min=0, help=f"The thread's new limit of {what}.")


def budget_of(calls: int | None, tokens: int | None, usd: float | None) -> Budget | None:
    if calls is None and tokens is None and usd is None:
        return None
    return Budget(max_model_calls=calls, max_tokens=tokens, max_usd=usd)


def _interactive(flag: bool | None) -> bool:
    return stdin_is_terminal() if flag is None else flag


@command(threads_app, "list")
def threads_list(
    status: Annotated[str | None, typer.Option(help="Only threads with this status.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only threads of this agent.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    server: ServerOpt = None,
) -> None:
    """List threads, newest first."""
    if status is not None and status not in {s.value for s in Status}:
        raise ConfigError(
            f"unknown status {status!r}; one of: " + ", ".join(s.value for s in Status)
        )

    page = call_threads(
        server, lambda api: api.list_threads(status=status, agent=agent, limit=limit)
    )
    for bad in page.skipped:
        err_console.print(
            f"[yellow]skipped thread {escape(bad.id)}:[/] {escape(bad.reason)}",
            highlight=False,
            soft_wrap=True,
        )
    if as_json:
        for s in page.items:
            row = {
                "id": s.id,
                "agent": s.agent,
                "status": s.status.value,
                "events": s.next_seq,
                "updated_at": s.updated_at.isoformat(),
            }
            typer.echo(json.dumps(row))
        return
    # The id is what a person copies into the next command: never cut short; others fold.
    whole = max((len(s.id) for s in page.items), default=2)
    folded = [Column(name, overflow="fold") for name in ("agent", "status", "events", "updated")]
    table = Table(Column("id", no_wrap=True, min_width=whole), *folded)
    for s in page.items:
        table.add_row(
            s.id,
            s.agent,
            s.status.value,
            str(s.next_seq),
            s.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    console.print(table)


@command(threads_app, "show")
def threads_show(
    thread_id: ThreadIdArg,
    as_json: Annotated[bool, typer.Option("--json", help="The whole thread as JSON.")] = False,
    server: ServerOpt = None,
) -> None:
    """Show a thread's events and derived state."""

    async def with_tree(api: ThreadsAPI) -> tuple[Thread, list[tuple[int, Thread]]]:
        thread = await api.load(thread_id)
        return thread, await _tree(api, thread)

    thread, tree = call_threads(server, with_tree)
    if as_json:
        typer.echo(json.dumps(thread.to_dict()))
        return
    st = thread.state
    console.print(
        f"[bold]{thread.id}[/] agent={thread.agent} status=[bold]"
        f"{thread.status.value}[/] events={len(thread)} model_calls="
        f"{st.model_calls} errors_in_a_row={st.consecutive_errors} tokens="
        f"{st.input_tokens}/{st.output_tokens}",
        highlight=False,
    )
    for line in budget_lines(thread):
        console.print(line, highlight=False)
    if len(tree) > 1:
        console.print("sub-agent tree:", highlight=False)
        for depth, node in tree:
            mark = " [bold]<- this thread[/]" if node.id == thread.id else ""
            console.print(
                f"  {'  ' * depth}{'└ ' if depth else ''}{node.id} {node.agent} "
                f"[bold]{node.status.value}[/]{mark}",
                highlight=False,
            )
    for event in thread.events:
        console.print(format_event(event), highlight=False, soft_wrap=True)


_MAX_TREE = 200
"""Threads shown at most in a sub-agent tree."""


async def _tree(api: ThreadsAPI, thread: Thread) -> list[tuple[int, Thread]]:
    """The sub-agent tree `thread` belongs to, from its root, depth first: (depth, thread)."""
    ancestors = thread.metadata.get("ancestors")
    root = thread
    if isinstance(ancestors, list) and ancestors and isinstance(ancestors[0], dict):
        with contextlib.suppress(ThreadlineError):
            root = await api.load(str(ancestors[0].get("thread")))
    out: list[tuple[int, Thread]] = []
    todo = [(0, root)]
    while todo and len(out) < _MAX_TREE:
        depth, node = todo.pop()
        out.append((depth, node))
        for kid in reversed(children(node)):
            with contextlib.suppress(ThreadlineError):
                loaded = thread if kid == thread.id else await api.load(kid)
                todo.append((depth + 1, loaded))
    return out
