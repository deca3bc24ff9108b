"""Commands that follow up on a thread that exists: approve, respond, message, threads
event, resume, pause, cancel, raise-budget, fork, replay.

Each loads the thread (from the local store, or a server with --server), acts on it, and
(most of them) runs it on to where it stops, as `threadline run` does (`core.act`); exit
codes are `run`'s (cli/core.py).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..bounds import BoundsError, parse_json
from ..errors import ConfigError, InvalidAction
from ..events import Thread
from ..replay import replay_thread
from ..runtime_actions import Verdict
from .api import agent_of
from .common import ThreadIdArg, app, command, console, threads_app
from .core import (
    AdvanceOpt,
    AgentOpt,
    ServerOpt,
    act,
    budget_of,
    budget_option,
    call_threads,
    next_step,
)

__all__: list[str] = []


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
        act(
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
        act(
            server,
            agent,
            thread_id,
            lambda api, thread: api.respond_instead(thread_id, pending_call(thread), instead),
            advance=advance,
        )
        return
    act(
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
    act(
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

    act(
        server,
        agent,
        thread_id,
        lambda api, thread: api.respond(thread_id, open_request(thread), text),
    )


@command(app)
def message(
    thread_id: ThreadIdArg,
    text: Annotated[str, typer.Argument(help="Your message to the thread.")],
    agent: AgentOpt = None,
    server: ServerOpt = None,
) -> None:
    """Send a thread a new message, then run the thread on: to tell an escalated thread how
    to go on, or to go on with a done or failed one (one asking a question takes it as the
    answer)."""
    act(server, agent, thread_id, lambda api, _: api.message(thread_id, text))


@command(app)
def resume(
    thread_id: ThreadIdArg,
    agent: AgentOpt = None,
    server: ServerOpt = None,
) -> None:
    """Resume a paused or escalated thread, or continue a running one (after a crash)."""
    act(server, agent, thread_id, lambda api, _: api.resume(thread_id))


@command(app)
def pause(thread_id: ThreadIdArg, server: ServerOpt = None) -> None:
    """Pause a thread: no step runs until `threadline resume`."""
    act(server, None, thread_id, lambda api, _: api.pause(thread_id), advance=False)


@command(app)
def cancel(
    thread_id: ThreadIdArg,
    reason: Annotated[str | None, typer.Option(help="Why (recorded).")] = None,
    server: ServerOpt = None,
) -> None:
    """Cancel a thread (it ends failed), and the sub-agent threads working for it."""
    act(server, None, thread_id, lambda api, _: api.cancel(thread_id, reason=reason), advance=False)


@command(app, "raise-budget")
def raise_budget(
    thread_id: ThreadIdArg,
    usd: Annotated[float | None, budget_option("--budget-usd", "USD")] = None,
    tokens: Annotated[int | None, budget_option("--budget-tokens", "tokens")] = None,
    calls: Annotated[int | None, budget_option("--budget-calls", "model calls")] = None,
    agent: AgentOpt = None,
    advance: AdvanceOpt = True,
    server: ServerOpt = None,
) -> None:
    """Raise a thread's own budget (the limits given; the others kept), then run it on: a
    thread its budget stopped goes on from where it stopped."""
    new = budget_of(calls, tokens, usd)
    if new is None:
        raise ConfigError("give a new limit: --budget-usd, --budget-tokens or --budget-calls")
    act(server, agent, thread_id, lambda api, _: api.raise_budget(thread_id, new), advance=advance)


@command(app)
def fork(
    thread_id: ThreadIdArg,
    at: Annotated[int, typer.Option("--at", help="Keep events 0..AT.")],
    server: ServerOpt = None,
) -> None:
    """Copy events 0..AT of a thread into a new thread (with a forked_from event)."""

    forked = call_threads(server, lambda api: api.fork(thread_id, at=at))
    hint = next_step(forked.id, forked.status, forked.escalation)
    console.print(
        f"forked {thread_id} at {at} into [bold]{forked.id}[/] ({forked.status.value}"
        + (f"; {escape(hint)})" if hint else ")"),
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

    thread = call_threads(server, lambda api: api.load(thread_id))
    derived = replay_thread(agent_of(thread, agent or ()), thread)
    console.print(f"replayed {len(derived)} events of {thread_id}: no divergence", highlight=False)
