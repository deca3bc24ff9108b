"""Core commands: run, threads list/show/event, approve, respond, resume, fork, replay.

Exit codes: 0 when the thread is done or waiting for someone (its id is printed), 3 when it
escalated, 4 when it failed, 1 for errors, 2 for bad usage.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

from ..bounds import BoundsError, parse_json
from ..composition import children
from ..errors import ConfigError, InvalidAction, ThreadlineError
from ..events import Budget, Event, Status, Thread
from ..replay import replay_thread
from ..runtime_actions import Verdict
from ..wire import ThreadOut, ThreadPage
from .api import ThreadsAPI, agent_of, open_threads
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

__all__ = ["Printer", "drive", "format_event", "session"]

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


def _act(
    server: str | None,
    agent_refs: Sequence[str] | None,
    thread_id: str,
    act: Callable[[ThreadsAPI, Thread], Awaitable[object]],
    *,
    advance: bool = True,
) -> None:
    """Load the thread, `act(api, thread)`, then (unless `advance=False`) get it to where it
    stops, and show where it got to."""

    async def go() -> Thread:
        async with session(server, agent_refs or ()) as (api, printer):
            thread = await api.load(thread_id)
            printer.follow(thread)
            await act(api, thread)
            if advance:
                return await drive(api, printer, thread_id, False)
            return printer.catch_up(await api.load(thread_id))

    _finish(run_async(go()))


def _continue_with(thread_id: str, status: Status) -> str:
    """The command that moves a thread with `status` on ("" for a done one)."""
    return {
        Status.AWAITING_APPROVAL: (
            f"threadline approve {thread_id} [--reject --comment TEXT | --instead TEXT]"
        ),
        Status.AWAITING_HUMAN: f"threadline respond {thread_id} TEXT",
        Status.WAITING: (
            f"threadline resume {thread_id} once the wait above is over, or leave it to a "
            "`threadline worker`"
        ),
        Status.FAILED: f"threadline threads retry {thread_id}",
        Status.DONE: "",
    }.get(status, f"threadline resume {thread_id}")  # running, paused, escalated


def _finish(thread: Thread) -> None:
    status = thread.status
    console.print(f"thread [bold]{thread.id}[/] is [bold]{status.value}[/]", highlight=False)
    if status in (Status.AWAITING_APPROVAL, Status.AWAITING_HUMAN, Status.PAUSED, Status.WAITING):
        console.print(f"continue with: {_continue_with(thread.id, status)}", highlight=False)
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
    budget = _budget(budget_calls, budget_tokens, budget_usd)
    tree_budget = _budget(tree_calls, tree_tokens, tree_usd)

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

    _finish(run_async(go()))


def _limit(flag: str, what: str, whose: str) -> Any:
    return typer.Option(flag, min=0, help=f"At most this many {what} for {whose}.")


def _budget(calls: int | None, tokens: int | None, usd: float | None) -> Budget | None:
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

    async def go() -> ThreadPage:
        async with session(server) as (api, _):
            return await api.list_threads(status=status, agent=agent, limit=limit)

    page = run_async(go())
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

    async def go() -> tuple[Thread, list[tuple[int, Thread]]]:
        async with session(server) as (api, _):
            thread = await api.load(thread_id)
            return thread, await _tree(api, thread)

    thread, tree = run_async(go())
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


@command(app)
def approve(
    thread_id: ThreadIdArg,
    call_id: Annotated[
        str | None, typer.Option("--call", help="Call id (default: the pending one).")
    ] = None,
    reject: Annotated[bool, typer.Option("--reject", help="Reject instead of approve.")] = False,
    comment: Annotated[str | None, typer.Option(help="Feedback the model will see.")] = None,
    edit: Annotated[str | None, typer.Option(help="Approve with these arguments (JSON).")] = None,
    instead: Annotated[
        str | None,
        typer.Option(help="No verdict: send the model this message instead (the call is not run)."),
    ] = None,
    verdicts: Annotated[
        str | None,
        typer.Option(
            help='Several verdicts at once (JSON list): [{"call_id": "c1", "approved": true}, '
            '{"call_id": "c2", "approved": false, "comment": "..."}, {"call_id": "c3", '
            '"edited_arguments": {...}}]; written together or not at all.'
        ),
    ] = None,
    agent: AgentOpt = None,
    advance: AdvanceOpt = True,
    server: ServerOpt = None,
) -> None:
    """Approve (or --reject) the call a thread is waiting on, then run the thread on.

    With --verdicts, answer several of its calls in one go (approve some, reject some,
    edit some). With --instead TEXT, give no verdict: the call is not run and the model
    reads TEXT (as your message) and decides again."""
    if verdicts is not None:
        batch = _parse_verdicts(verdicts)
        _act(
            server,
            agent,
            thread_id,
            lambda api, _: api.approve_many(thread_id, batch),
            advance=advance,
        )
        return
    edited = _json_object(edit, "--edit", "of arguments")

    def pending_call(thread: Thread) -> str:
        if call_id is not None:
            return call_id
        waiting = [c.call_id for c in thread.state.pending.values() if c.approval == "requested"]
        if not waiting:
            raise InvalidAction(
                f"thread {thread_id} is {thread.status.value}; no call is awaiting approval"
            )
        return waiting[0]

    if instead is not None:
        if reject or comment is not None or edited is not None:
            raise ConfigError(
                "--instead is a message, not a verdict: drop --reject, --comment and --edit"
            )
        _act(
            server,
            agent,
            thread_id,
            lambda api, thread: api.respond_instead(thread_id, pending_call(thread), instead),
            advance=advance,
        )
        return
    _act(
        server,
        agent,
        thread_id,
        lambda api, thread: api.approve(
            thread_id,
            pending_call(thread),
            approved=not reject,
            comment=comment,
            edited_arguments=edited,
        ),
        advance=advance,
    )


def _parse_verdicts(text: str) -> list[Verdict]:
    """`--verdicts` JSON as verdicts. Raises ConfigError saying what is wrong."""
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--verdicts is not JSON: {exc}") from None
    if not isinstance(items, list) or not items:
        raise ConfigError("--verdicts must be a non-empty JSON list of verdicts")
    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("call_id"), str):
            raise ConfigError('each verdict must be a JSON object with a "call_id"')
        unknown = set(item) - {"call_id", "approved", "comment", "edited_arguments"}
        if unknown:
            raise ConfigError(f"unknown verdict fields: {', '.join(sorted(unknown))}")
        edited = item.get("edited_arguments")
        if edited is not None and not isinstance(edited, dict):
            raise ConfigError("edited_arguments must be a JSON object of arguments")
        out.append(
            Verdict(item["call_id"], bool(item.get("approved", True)), item.get("comment"), edited)
        )
    return out


def _json_object(text: str | None, option: str, what: str = "") -> dict[str, Any] | None:
    """A command-line JSON object within the limits every stored value keeps (bounds)."""
    if text is None:
        return None
    try:
        value = parse_json(text)
    except BoundsError as exc:
        raise ConfigError(f"{option} is refused: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{option} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{option} must be a JSON object {what}".strip())
    return value


@command(threads_app, "event")
def threads_event(
    thread_id: ThreadIdArg,
    name: Annotated[str, typer.Argument(help="The event's name (what wait_for_event waits for).")],
    payload: Annotated[str | None, typer.Option(help="The event's data: a JSON object.")] = None,
    agent: AgentOpt = None,
    advance: AdvanceOpt = True,
    server: ServerOpt = None,
) -> None:
    """Record an external event on a thread (a payment arrived, a job finished): it ends a
    wait_for_event waiting for NAME; then the thread runs on."""
    data = _json_object(payload, "--payload")
    _act(
        server,
        agent,
        thread_id,
        lambda api, _: api.external_event(thread_id, name, data),
        advance=advance,
    )


@command(app)
def respond(
    thread_id: ThreadIdArg,
    text: Annotated[str, typer.Argument(help="Your answer to the thread's question.")],
    agent: AgentOpt = None,
    server: ServerOpt = None,
) -> None:
    """Answer the question a thread asked, then run the thread on."""

    def open_request(thread: Thread) -> str:
        if thread.state.human_request is None:
            raise InvalidAction(f"thread {thread_id} is {thread.status.value}; it asked nothing")
        return thread.state.human_request

    _act(
        server,
        agent,
        thread_id,
        lambda api, thread: api.respond(thread_id, open_request(thread), text),
    )


@command(app)
def resume(
    thread_id: ThreadIdArg,
    agent: AgentOpt = None,
    server: ServerOpt = None,
) -> None:
    """Resume a paused or escalated thread, or continue a running one (after a crash)."""
    _act(server, agent, thread_id, lambda api, _: api.resume(thread_id))


@command(app)
def pause(thread_id: ThreadIdArg, server: ServerOpt = None) -> None:
    """Pause a thread: no step runs until `threadline resume`."""
    _act(server, None, thread_id, lambda api, _: api.pause(thread_id), advance=False)


@command(app)
def cancel(
    thread_id: ThreadIdArg,
    reason: Annotated[str | None, typer.Option(help="Why (recorded).")] = None,
    server: ServerOpt = None,
) -> None:
    """Cancel a thread (it ends failed), and the sub-agent threads working for it."""
    _act(
        server, None, thread_id, lambda api, _: api.cancel(thread_id, reason=reason), advance=False
    )


@command(app)
def fork(
    thread_id: ThreadIdArg,
    at: Annotated[int, typer.Option("--at", help="Keep events 0..AT.")],
    server: ServerOpt = None,
) -> None:
    """Copy events 0..AT of a thread into a new thread (with a forked_from event)."""

    async def go() -> ThreadOut:
        async with session(server) as (api, _):
            return await api.fork(thread_id, at=at)

    forked = run_async(go())
    hint = _continue_with(forked.id, forked.status)
    console.print(
        f"forked {thread_id} at {at} into [bold]{forked.id}[/] ({forked.status.value}"
        + (f"; continue with: {hint})" if hint else ")"),
        highlight=False,
    )


@command(app)
def replay(
    thread_id: ThreadIdArg,
    agent: AgentOpt = None,
    server: ServerOpt = None,
) -> None:
    """Re-derive every step from the recorded inputs; fail naming the first divergent event.

    The thread comes from the store (or the server, with --server) and is replayed against
    the local agent code (--agent, or the reference recorded on the thread).
    """

    async def go() -> Thread:
        async with session(server) as (api, _):
            return await api.load(thread_id)

    thread = run_async(go())
    derived = replay_thread(agent_of(thread, agent or ()), thread)
    console.print(f"replayed {len(derived)} events of {thread_id}: no divergence", highlight=False)
