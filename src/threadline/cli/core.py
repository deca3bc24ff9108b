"""Core commands: run, threads list/show, approve, respond, resume, fork, replay.

Exit codes: 0 when the thread is done or waiting for someone (its id is printed), 3 when it
escalated, 4 when it failed, 1 for errors, 2 for bad usage.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..agent import Agent
from ..bootstrap import load_agents, open_runtime
from ..errors import ConfigError, InvalidAction
from ..events import Event, Status, Thread
from ..runtime import Runtime
from ..stores.base import Store
from ..worker import advance_exclusively, default_owner, owner_is_gone
from .common import (
    LockedOpt,
    app,
    console,
    err_console,
    handle_errors,
    run_async,
    settings,
    stdin_is_terminal,
    threads_app,
)

__all__ = ["format_event"]

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

_STYLE = {
    "user_message": "bold cyan",
    "model_call": "dim",
    "tool_call": "yellow",
    "tool_result": "green",
    "tool_error": "red",
    "invalid_output": "red",
    "model_error": "red",
    "approval_requested": "bold magenta",
    "approval": "magenta",
    "human_request": "bold blue",
    "human_response": "blue",
    "done": "bold green",
    "escalated": "bold red",
    "failed": "bold red",
}


def format_event(event: Event) -> str:
    """One readable line for an event (Rich markup)."""
    style = _STYLE.get(event.kind, "white")
    detail = ""
    match event.kind:
        case "user_message" | "human_response":
            detail = event.text
        case "model_call":
            detail = (
                f"{event.model} in={event.input_tokens} out={event.output_tokens} "
                f"{event.latency_ms:.0f}ms"
            )
        case "tool_call":
            detail = f"{event.tool}({_args(event.arguments)}) [{event.call_id}]"
        case "tool_result":
            detail = f"{event.tool} -> {json.dumps(event.result, ensure_ascii=False)}"
        case "tool_error" | "model_error":
            detail = f"{event.error_type}: {event.message}"
        case "invalid_output":
            detail = event.reason
        case "approval_requested":
            detail = f"{event.tool}({_args(event.arguments)}) [{event.call_id}] needs approval"
        case "approval":
            verdict = "approved" if event.approved else "rejected"
            detail = f"{verdict} {event.call_id}" + (f": {event.comment}" if event.comment else "")
        case "human_request":
            detail = f"{event.question} [{event.request_id}]"
        case "done":
            detail = event.message
        case "escalated" | "failed":
            detail = event.reason
        case "forked_from":
            detail = f"{event.thread_id} at {event.at_seq}"
        case "tool_started":
            detail = f"{event.call_id} attempt {event.attempt}"
    detail = detail if len(detail) <= 300 else detail[:299] + "…"
    return f"[dim]{event.seq:>4}[/] [{style}]{event.kind:<18}[/] {escape(detail)}"


def _args(arguments: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())


def _printer(thread: Thread, events: Any) -> None:
    for event in events:
        console.print(format_event(event), highlight=False, soft_wrap=True)


def _open(agent_refs: list[str] | None, *, echo: bool = True, locked: bool = False) -> Runtime:
    """A runtime without a model yet: `_with_model` adds the configured one only when an
    agent that will run does not pin its own (so a pinned agent needs no model config)."""
    loaded = load_agents(agent_refs or [])
    rt = open_runtime(
        settings(locked),
        [a for a, _ in loaded.values()],
        with_model=False,
        observers=[_printer] if echo else [],
    )
    rt.agent_refs = {name: ref for name, (_, ref) in loaded.items()}  # type: ignore[attr-defined]
    return rt


def _with_model(rt: Runtime, agent: Agent) -> None:
    if agent.model is None and rt.model is None:
        from ..models.registry import resolve_model

        rt.model = resolve_model(settings().model)


def _know_agent(rt: Runtime, thread: Thread) -> None:
    """Make sure the runtime knows the thread's agent: from --agent or the recorded ref."""
    if thread.agent in rt.agents:
        return
    ref = thread.metadata.get("agent_ref")
    if not ref:
        raise ConfigError(
            f"thread {thread.id} was made by agent {thread.agent!r}; pass --agent path.py:name"
        )
    for agent, _ in load_agents([str(ref)]).values():
        rt.add_agent(agent)


async def _ensure_agent(rt: Runtime, thread_id: str, *, model: bool = True) -> Thread:
    """Load the thread, make sure its agent is known and, when `model`, that the runtime
    can call a model for it."""
    thread = await rt.store.load(thread_id)
    _know_agent(rt, thread)
    if model:
        _with_model(rt, rt.agent(thread.agent))
    return thread


async def _advance(rt: Runtime, thread: Thread) -> Thread:
    """Advance under a lease, so a worker or server sharing the store never advances the
    same thread at the same time; say so when someone else holds it."""
    owner = f"cli:{default_owner()}"
    if not await advance_exclusively(rt, thread.id, owner=owner, ttl=10.0):
        summary = await rt.store.get(thread.id)
        holder = summary.lease_owner
        if holder and summary.status in (Status.RUNNING, Status.WAITING):
            if owner_is_gone(holder):
                err_console.print(
                    f"[yellow]note:[/] taking over from {holder}, which is no longer running",
                    highlight=False,
                )
                await rt.store.break_lease(thread.id)
                await advance_exclusively(rt, thread.id, owner=owner, ttl=10.0)
            else:
                err_console.print(
                    f"[yellow]note:[/] {holder} is advancing this thread; not advancing it here",
                    highlight=False,
                )
    return await rt.store.load(thread.id)


async def _drive(rt: Runtime, thread: Thread, interactive: bool) -> Thread:
    """Advance; at a pause in a terminal ask the human, otherwise leave it paused."""
    thread = await _advance(rt, thread)
    while interactive:
        state = thread.state
        if thread.status == Status.AWAITING_APPROVAL:
            call = next(c for c in state.pending.values() if c.approval == "requested")
            console.print(f"[bold magenta]approve[/] {call.tool}({escape(_args(call.arguments))})?")
            answer = typer.prompt("approve? [y]es / [n]o", default="y").strip().lower()
            if answer.startswith("y"):
                await rt.approve(thread.id, call.call_id, approved=True, channel="cli")
            else:
                comment = typer.prompt("feedback for the agent", default="", show_default=False)
                await rt.approve(
                    thread.id, call.call_id, approved=False, comment=comment or None, channel="cli"
                )
        elif thread.status == Status.AWAITING_HUMAN and state.human_request:
            text = typer.prompt("your answer")
            await rt.respond(thread.id, state.human_request, text, channel="cli")
        else:
            break
        thread = await _advance(rt, thread)
    return thread


def _client(server: str) -> Any:
    from ..client import Client

    return Client.from_settings(server, settings())


def _print_from(thread: Thread, seq: int) -> None:
    for event in thread.events[seq:]:
        console.print(format_event(event), highlight=False, soft_wrap=True)


async def _remote_drive(client: Any, thread_id: str, shown: int, interactive: bool) -> Thread:
    """Wait for the server to stop running the thread, print what is new, and in a
    terminal answer its approval or question, like `_drive` does locally."""
    while True:
        thread: Thread = await client.settle(thread_id)
        _print_from(thread, shown)
        shown = len(thread)
        state = thread.state
        if not interactive:
            return thread
        if thread.status == Status.AWAITING_APPROVAL:
            call = next(c for c in state.pending.values() if c.approval == "requested")
            console.print(f"[bold magenta]approve[/] {call.tool}({escape(_args(call.arguments))})?")
            if typer.prompt("approve? [y]es / [n]o", default="y").strip().lower().startswith("y"):
                await client.approve(thread_id, call.call_id, approved=True)
            else:
                comment = typer.prompt("feedback for the agent", default="", show_default=False)
                await client.approve(
                    thread_id, call.call_id, approved=False, comment=comment or None
                )
        elif thread.status == Status.AWAITING_HUMAN and state.human_request:
            await client.respond(thread_id, state.human_request, typer.prompt("your answer"))
        else:
            return thread


def _remote_act(
    server: str, thread_id: str, act: Callable[[Any, Thread], Awaitable[object]]
) -> None:
    """Load the thread from the server, `act(client, thread)`, then show where it got to."""

    async def go() -> Thread:
        async with _client(server) as client:
            thread = await client.load(thread_id)
            await act(client, thread)
            return await _remote_drive(client, thread_id, len(thread), False)

    _finish(run_async(go()))


def _local_act(
    agent_refs: list[str] | None,
    thread_id: str,
    act: Callable[[Runtime, Thread], Awaitable[Thread]],
    *,
    advance: bool = True,
) -> None:
    """Load the thread (and its agent), `act(runtime, thread)`, then run it on unless
    `advance=False`, and show where it got to."""

    async def go() -> Thread:
        rt = _open(agent_refs)
        try:
            thread = await act(rt, await _ensure_agent(rt, thread_id, model=advance))
            return await _drive(rt, thread, False) if advance else thread
        finally:
            await rt.store.close()

    _finish(run_async(go()))


def _finish(thread: Thread) -> None:
    status = thread.status
    console.print(f"thread [bold]{thread.id}[/] is [bold]{status.value}[/]", highlight=False)
    if status in (Status.AWAITING_APPROVAL, Status.AWAITING_HUMAN, Status.PAUSED):
        hint = {
            "awaiting_approval": f"threadline approve {thread.id} [--reject --comment TEXT]",
            "awaiting_human": f"threadline respond {thread.id} TEXT",
            "paused": f"threadline resume {thread.id}",
        }[status.value]
        console.print(f"continue with: {hint}", highlight=False)
    if status == Status.ESCALATED:
        raise typer.Exit(3)
    if status == Status.FAILED:
        raise typer.Exit(4)


@app.command()
@handle_errors
def run(
    agent: Annotated[str, typer.Argument(help="path/to/file.py:name or package.module:name")],
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
) -> None:
    """Launch a thread of AGENT with MESSAGE and run it, printing events as they happen.

    With --server, AGENT is the name of an agent the server serves.
    """
    if server:

        async def remote() -> Thread:
            async with _client(server) as client:
                launched = await client.launch(agent, message, metadata={"channel": "cli"})
                return await _remote_drive(client, launched.id, 0, _interactive(interactive))

        _finish(run_async(remote()))
        return

    async def go() -> Thread:
        loaded = load_agents([agent])
        ((the_agent, ref),) = loaded.values()
        rt = _open([agent], locked=locked)
        try:
            _with_model(rt, the_agent)
            model = the_agent.model or rt.model
            if model is not None and model.model_id.startswith("scripted"):
                err_console.print(
                    f"[yellow]note:[/] using the scripted model {model.model_id} "
                    "(canned answers, not a real LLM)"
                )
            thread = await rt.launch(
                the_agent, message, channel="cli", advance=False, metadata={"agent_ref": ref}
            )
            return await _drive(rt, thread, _interactive(interactive))
        finally:
            await rt.store.close()

    _finish(run_async(go()))


def _interactive(flag: bool | None) -> bool:
    return stdin_is_terminal() if flag is None else flag


@threads_app.command("list")
@handle_errors
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

    async def go() -> None:
        page: Any
        if server:
            async with _client(server) as client:
                page = await client.list_threads(status=status, agent=agent, limit=limit)
        else:
            store = _store()
            try:
                page = await store.list(status=status, agent=agent, limit=limit)
            finally:
                await store.close()
        if as_json:
            for s in page.items:
                typer.echo(
                    json.dumps(
                        {
                            "id": s.id,
                            "agent": s.agent,
                            "status": s.status.value,
                            "events": s.next_seq,
                            "updated_at": s.updated_at.isoformat(),
                        }
                    )
                )
            return
        table = Table("id", "agent", "status", "events", "updated")
        for s in page.items:
            table.add_row(
                s.id,
                s.agent,
                s.status.value,
                str(s.next_seq),
                s.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
            )
        console.print(table)

    run_async(go())


@threads_app.command("show")
@handle_errors
def threads_show(
    thread_id: Annotated[str, typer.Argument(help="Thread id.")],
    as_json: Annotated[bool, typer.Option("--json", help="The whole thread as JSON.")] = False,
    server: ServerOpt = None,
) -> None:
    """Show a thread's events and derived state."""

    async def go() -> None:
        thread = await _load(thread_id, server)
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
        for event in thread.events:
            console.print(format_event(event), highlight=False, soft_wrap=True)

    run_async(go())


async def _load(thread_id: str, server: str | None) -> Thread:
    if server:
        async with _client(server) as client:
            thread: Thread = await client.load(thread_id)
            return thread
    store = _store()
    try:
        return await store.load(thread_id)
    finally:
        await store.close()


def _store() -> Store:
    from ..stores import open_store

    return open_store(settings().store)


@app.command()
@handle_errors
def approve(
    thread_id: Annotated[str, typer.Argument(help="Thread id.")],
    call_id: Annotated[
        str | None, typer.Option("--call", help="Call id (default: the pending one).")
    ] = None,
    reject: Annotated[bool, typer.Option("--reject", help="Reject instead of approve.")] = False,
    comment: Annotated[str | None, typer.Option(help="Feedback the model will see.")] = None,
    edit: Annotated[str | None, typer.Option(help="Approve with these arguments (JSON).")] = None,
    agent: AgentOpt = None,
    advance: Annotated[
        bool, typer.Option("--advance/--no-advance", help="Run the thread on afterwards.")
    ] = True,
    server: ServerOpt = None,
) -> None:
    """Approve (or --reject) the call a thread is waiting on, then run the thread on."""
    edited = None
    if edit is not None:
        try:
            edited = json.loads(edit)
        except ValueError as exc:
            raise ConfigError(f"--edit is not JSON: {exc}") from None
        if not isinstance(edited, dict):
            raise ConfigError("--edit must be a JSON object of arguments")

    def pending_call(thread: Thread) -> str:
        if call_id is not None:
            return call_id
        waiting = [c.call_id for c in thread.state.pending.values() if c.approval == "requested"]
        if not waiting:
            raise InvalidAction(
                f"thread {thread_id} is {thread.status.value}; no call is awaiting approval"
            )
        return waiting[0]

    if server:
        _remote_act(
            server,
            thread_id,
            lambda client, thread: client.approve(
                thread_id,
                pending_call(thread),
                approved=not reject,
                comment=comment,
                edited_arguments=edited,
            ),
        )
        return

    _local_act(
        agent,
        thread_id,
        lambda rt, thread: rt.approve(
            thread_id,
            pending_call(thread),
            approved=not reject,
            comment=comment,
            edited_arguments=edited,
            channel="cli",
        ),
        advance=advance,
    )


@app.command()
@handle_errors
def respond(
    thread_id: Annotated[str, typer.Argument(help="Thread id.")],
    text: Annotated[str, typer.Argument(help="Your answer to the thread's question.")],
    agent: AgentOpt = None,
    server: ServerOpt = None,
) -> None:
    """Answer the question a thread asked, then run the thread on."""

    def open_request(thread: Thread) -> str:
        if thread.state.human_request is None:
            raise InvalidAction(f"thread {thread_id} is {thread.status.value}; it asked nothing")
        return thread.state.human_request

    if server:
        _remote_act(
            server,
            thread_id,
            lambda client, thread: client.respond(thread_id, open_request(thread), text),
        )
        return

    _local_act(
        agent,
        thread_id,
        lambda rt, thread: rt.respond(thread_id, open_request(thread), text, channel="cli"),
    )


@app.command()
@handle_errors
def resume(
    thread_id: Annotated[str, typer.Argument(help="Thread id.")],
    agent: AgentOpt = None,
    server: ServerOpt = None,
) -> None:
    """Resume a paused or escalated thread, or continue a running one (after a crash)."""
    if server:
        _remote_act(server, thread_id, lambda client, thread: client.resume(thread_id))
        return

    async def resumed(rt: Runtime, thread: Thread) -> Thread:
        if thread.status in (Status.PAUSED, Status.ESCALATED):
            return await rt.resume(thread_id, by="cli")
        if thread.status != Status.RUNNING:
            raise InvalidAction(f"thread {thread_id} is {thread.status.value}; nothing to resume")
        return thread  # running: a crashed process left it mid-way; just run it on

    _local_act(agent, thread_id, resumed)


@app.command()
@handle_errors
def pause(
    thread_id: Annotated[str, typer.Argument(help="Thread id.")], server: ServerOpt = None
) -> None:
    """Pause a thread: no step runs until `threadline resume`."""
    if server:

        async def remote() -> Thread:
            async with _client(server) as client:
                await client.pause(thread_id)
                thread: Thread = await client.load(thread_id)
                return thread

        _finish(run_async(remote()))
        return

    async def go() -> Thread:
        rt = _open(None)
        try:
            return await rt.pause(thread_id, by="cli")
        finally:
            await rt.store.close()

    _finish(run_async(go()))


@app.command()
@handle_errors
def fork(
    thread_id: Annotated[str, typer.Argument(help="Thread id.")],
    at: Annotated[int, typer.Option("--at", help="Keep events 0..AT.")],
    server: ServerOpt = None,
) -> None:
    """Copy events 0..AT of a thread into a new thread (with a forked_from event)."""

    async def go() -> Any:
        if server:
            async with _client(server) as client:
                return await client.fork(thread_id, at=at)
        rt = _open(None, echo=False)
        try:
            return await rt.fork(thread_id, at=at)
        finally:
            await rt.store.close()

    forked = run_async(go())
    console.print(
        f"forked {thread_id} at {at} into [bold]{forked.id}[/] "
        f"(continue with: threadline resume {forked.id})",
        highlight=False,
    )


@app.command()
@handle_errors
def replay(
    thread_id: Annotated[str, typer.Argument(help="Thread id.")],
    agent: AgentOpt = None,
    server: ServerOpt = None,
) -> None:
    """Re-derive every step from the recorded inputs; fail naming the first divergent event.

    With --server the thread is fetched from the server and replayed against the local
    agent code (--agent, or the reference recorded on the thread).
    """

    async def go() -> Thread:
        rt = _open(agent, echo=False)
        try:
            if server:
                thread = await _load(thread_id, server)
                _know_agent(rt, thread)
            else:
                thread = await _ensure_agent(rt, thread_id, model=False)
            return await rt.replay(thread)
        finally:
            await rt.store.close()

    derived = run_async(go())
    console.print(f"replayed {len(derived)} events of {thread_id}: no divergence", highlight=False)
