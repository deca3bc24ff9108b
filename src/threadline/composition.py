"""Sub-agents as tools: child threads linked to their parent (factor 10, small agents).

`Agent.as_tool()` makes a tool of kind `agent`. When a parent's call of it runs:

1. the child thread is created in the same store, with the call's `task` as its first
   message and its parent in its metadata (`parent_thread`, `parent_call`, and
   `ancestors`: the chain from the root, each `{thread, agent, call}`). Its id is derived
   from the parent's id and the call id, so a run repeated after a crash finds the child
   it made instead of making a second one;
2. the parent records `child_started`: the call is delegated, and while nothing else of
   its answer can run the parent is `waiting`, held by no process (a durable wait);
3. the child is advanced like any thread. When it ends, its outcome is appended to the
   parent as the call's outcome: `done` -> `tool_result` (the final message), `escalated`
   or `failed` -> `tool_error` (`SubAgentEscalated`), which escalates the parent too when
   the tool says `on_escalation="escalate"`. Then the parent is advanced.

A child waiting for a person (an approval, a question) leaves its ancestors waiting; the
inbox shows it with its `ancestors`, and answering it resumes the child, then each parent
in turn. Pausing or resuming a parent does the same to its running children; cancelling
it cancels them, and a child made for a call withdrawn before its `child_started` is
cancelled by the run that made it.

Replaying a parent never runs a child: `child_started` and the delivered outcome are
recorded results, taken as they are.

Invariants:
    * A delegated call gets exactly one outcome: delivery checks the parent's call is still
      pending and delegated to this very child, in the same append.
    * Every child's advance, and every parent's after delivery, happens under a lease when
      the caller holds one (workers, the server, the CLI), so no thread has two advancers.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from .agent import Agent
from .budgets import child_metadata, tree_ran_out
from .errors import InvalidAction, ThreadNotFound
from .events import ChildStarted, Done, Event, Status, Thread, ToolError, ToolResult
from .events.state import PendingCall
from .leases import heartbeat
from .stores.base import Lease, Store
from .tools import ESCALATED_CHILD, SubAgentTask, Tool

if TYPE_CHECKING:
    from .parallel import Tail

__all__ = ["Host", "child_id", "children", "collect", "deliver", "outcome_events", "start_child"]


class Host(Protocol):
    """What sub-agent calls need of the runtime that runs them (`Runtime` is one); declared
    here so that composition sits below the runtime, which calls it."""

    store: Store
    lease_ttl: float

    @property
    def stopping(self) -> bool: ...

    def add_agent(self, agent: Agent) -> None: ...

    def agent(self, name: str) -> Agent: ...

    async def launch(
        self,
        agent: Agent,
        message: str,
        *,
        channel: str,
        sender: str,
        metadata: dict[str, Any],
        thread_id: str,
        advance: bool,
    ) -> Thread: ...

    async def advance(
        self, thread: str, *, lease: Lease | None, max_steps: int | None
    ) -> Thread: ...

    async def advance_only(
        self, thread: str, *, lease: Lease | None, max_steps: int | None
    ) -> Thread: ...

    async def append_outcome(
        self,
        thread: Thread,
        build: Callable[[int, datetime], list[Event]],
        still_valid: Callable[[Thread], bool],
    ) -> Thread: ...

    async def cancel(
        self, thread_id: str, *, by: str | None = None, reason: str | None = None
    ) -> Thread: ...


def child_id(parent_id: str, call_id: str) -> str:
    """The id of the child thread working on `call_id` of `parent_id` (stable)."""
    digest = hashlib.sha256(f"{parent_id}:{call_id}".encode()).hexdigest()
    return f"th_{digest[:28]}"


def children(thread: Thread) -> list[str]:
    """Ids of every child thread `thread` started, in the order it started them."""
    return [e.thread_id for e in thread.events if isinstance(e, ChildStarted)]


def _ancestry(parent: Thread, call_id: str) -> list[dict[str, str]]:
    above = parent.metadata.get("ancestors")
    chain = [dict(a) for a in above] if isinstance(above, list) else []
    return [*chain, {"thread": parent.id, "agent": parent.agent, "call": call_id}]


async def start_child(
    runtime: Host, tail: Tail, call: PendingCall, tool: Tool, args: Any, lease: Lease | None
) -> None:
    """Run a sub-agent call of the thread at `tail`: create (or find) the child, record
    `child_started`, advance the child, and deliver its outcome if it ended."""
    sub = tool.sub_agent
    if sub is None:  # only `agent` tools come here
        raise TypeError(f"tool {tool.key} is not a sub-agent")
    parent = tail.thread
    cid = child_id(parent.id, call.call_id)
    task = args.task if isinstance(args, SubAgentTask) else str(call.arguments.get("task", ""))
    runtime.add_agent(sub.agent)
    try:
        await runtime.store.get(cid)
    except ThreadNotFound:
        await runtime.launch(
            sub.agent,
            task,
            channel="agent",
            sender=parent.agent,
            metadata={
                "parent_thread": parent.id,
                "parent_call": call.call_id,
                "ancestors": _ancestry(parent, call.call_id),
                **child_metadata(runtime.agent(parent.agent), parent),  # the tree's budget
            },
            thread_id=cid,
            advance=False,
        )
    parent = await tail.append(
        lambda seq, at: [
            ChildStarted(seq=seq, at=at, call_id=call.call_id, thread_id=cid, agent=sub.agent.name)
        ],
        lambda t: _still_pending(t, call.call_id, None),
    )
    if call.call_id not in parent.state.pending:
        # The call ended before its child could start (a cancel withdrew it): the child
        # made for it would otherwise run on its own, for nobody.
        with contextlib.suppress(InvalidAction):
            await runtime.cancel(
                cid, by=f"thread {parent.id}", reason=f"its call {call.call_id} was withdrawn"
            )
        return
    await with_lease(
        runtime, cid, lease, lambda held, n: runtime.advance_only(cid, lease=held, max_steps=n)
    )
    child = await runtime.store.load(cid)  # also when another holder advanced it
    if child.status in _ENDED:
        await tail.append(
            lambda seq, at: outcome_events(child, call.call_id, tool.name, seq, at, tail.thread),
            lambda t: _still_pending(t, call.call_id, cid),
        )


_ENDED = (Status.DONE, Status.ESCALATED, Status.FAILED)


def _still_pending(thread: Thread, call_id: str, child: str | None) -> bool:
    call = thread.state.pending.get(call_id)
    return call is not None and call.child == child


def outcome_events(
    child: Thread, call_id: str, tool: str, seq: int, at: datetime, parent: Thread | None = None
) -> list[Event]:
    """The parent's outcome of a call whose child thread ended; a child stopped by the
    tree's budget stops `parent` too (`budgets.tree_ran_out`)."""
    last = child.events[-1]
    if isinstance(last, Done) or child.status == Status.DONE:
        message = last.message if isinstance(last, Done) else ""
        return [ToolResult(seq=seq, at=at, call_id=call_id, tool=tool, result=message)]
    reason = getattr(last, "reason", "") or child.state.last_error or child.status.value
    return [
        ToolError(
            seq=seq,
            at=at,
            call_id=call_id,
            tool=tool,
            error_type=ESCALATED_CHILD,
            message=f"sub-agent {child.agent} ({child.id}) {child.status.value}: {reason}",
        ),
        *tree_ran_out(child, parent, seq + 1, at),
    ]


async def deliver(runtime: Host, child: Thread, lease: Lease | None) -> None:
    """`child` ended: append its outcome to its parent's call, then advance the parent (which
    delivers further up when it ends). Nothing happens when the parent has moved on (the
    call already has an outcome) or the child has no parent."""
    parent_id = child.metadata.get("parent_thread")
    call_id = child.metadata.get("parent_call")
    if not isinstance(parent_id, str) or not isinstance(call_id, str):
        return
    try:
        parent = await runtime.store.load(parent_id)
    except ThreadNotFound:
        return
    call = parent.state.pending.get(call_id)
    if call is None or call.child != child.id:
        return
    parent = await _report(runtime, parent, call, child)
    if parent.status == Status.RUNNING:
        await with_lease(
            runtime,
            parent_id,
            lease,
            lambda held, n: runtime.advance(parent_id, lease=held, max_steps=n),
        )


async def collect(runtime: Host, thread: Thread) -> Thread:
    """Append the outcome of every delegated call of `thread` whose child already ended.

    Delivery normally follows the child's end at once; a crash between the two leaves the
    parent waiting on a child that is done. Advancing the parent (a kick, a worker, the
    CLI) collects those outcomes here, so the parent never waits on an ended child.
    """
    for call in list(thread.state.pending.values()):
        if call.child is None or thread.status == Status.PAUSED:
            continue
        try:
            child = await runtime.store.load(call.child)
        except ThreadNotFound:
            continue
        if child.status in _ENDED:
            thread = await _report(runtime, thread, call, child)
    return thread


async def _report(runtime: Host, parent: Thread, call: PendingCall, child: Thread) -> Thread:
    """Append the ended `child`'s outcome to `call` of `parent` (once: see the invariant)."""
    return await runtime.append_outcome(
        parent,
        lambda seq, at: outcome_events(child, call.call_id, call.tool, seq, at, parent),
        lambda t: _still_pending(t, call.call_id, child.id),
    )


async def with_lease(
    runtime: Host,
    thread_id: str,
    lease: Lease | None,
    advance: Callable[[Lease | None, int | None], Awaitable[Thread]],
) -> Thread | None:
    """Advance `thread_id` as the caller does: `advance(None, None)` (to where it stops)
    when the caller holds no lease; else lease it for the same owner for
    `Runtime.lease_ttl` seconds, advance it one step at a time while a heartbeat renews the
    lease (a step may outlast the lease: a slow tool, a grandchild's turn), then release
    it. None when another holder has the thread (that holder advances it) or it is not
    runnable."""
    if lease is None:
        return await advance(None, None)
    ttl = runtime.lease_ttl
    leases = await runtime.store.lease(lease.owner, ttl=ttl, thread_ids=[thread_id])
    if not leases:
        return None
    held = leases[0]
    try:
        async with heartbeat(runtime.store, held, ttl):
            thread = await advance(held, 1)
            while thread.status == Status.RUNNING and not runtime.stopping:
                seq = thread.next_seq
                thread = await advance(held, 1)
                if thread.next_seq == seq:
                    break  # nothing more to do now
            return thread
    finally:
        await runtime.store.release(held)
