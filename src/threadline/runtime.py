"""The run loop: `perform` each step `decide` returns, checkpointing every event (factor 8).

    while (step := decide(agent, thread)) is not Wait:
        events = perform(step)            # the only place with I/O
        store.append(thread, events)      # checkpointed before anything else happens

Human actions (approve, respond, message, pause, resume) are appends too: each checks that
it fits the thread's state, and an action that does not fit raises `InvalidAction` having
written nothing. All appends are optimistic (`expected_seq`); when a human action lands
while a step is in flight, the step's events are re-based on the new tail if they still
apply (a tool outcome whose call is still pending), so no outcome of a side effect is lost.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from pydantic import BaseModel

from . import reducer as rd
from .agent import Agent
from .bounds import stored_result
from .budgets import Budget, Unsettled, check_prices, launch_metadata, reserve
from .composition import collect, deliver, start_child
from .context.redaction import redact_for_storage, untrusted
from .context.renderer import Renderer
from .errors import AppendConflict, ConfigError, ModelError
from .events import Event, Status, Thread, utcnow
from .events.state import TERMINAL
from .execution import Outcome, carry_validated, compact_error, model_answer, tool_of, tool_started
from .guards import guard_verdicts, unjudged
from .launch import launched, thread_metadata, user_message
from .loader import note_refs
from .models.base import Model, ModelOutput
from .overflow import model_of, render_again
from .parallel import Append, Tail, run_batch
from .pipeline import Pipeline, Refused, as_of, rollback
from .prompts import renderer_for
from .ratelimits import NO_LIMIT, RateLimiter, RateLimits
from .rebase import ended_meanwhile, reload_refused, still_decided
from .retries import ToolRuns
from .runtime_actions import HumanActions
from .stores.base import Lease, Store, new_thread_id

__all__ = ["Observer", "Runtime", "compact_error"]

T = TypeVar("T")

Observer = Callable[[Thread, Sequence[Event]], Awaitable[None] | None]
"""Called after every successful append with the thread and the events just written."""


class Runtime(HumanActions):
    """Runs agents' threads against a store.

    Args:
        store: where threads live.
        agents: the agents this runtime can advance, by name.
        model: the model for agents that do not pin their own.
        observers: called after each append (logging, live streams, webhooks).
        offload: do the CPU-heavy pure work of a step (rendering, storage redaction, the
            checks of a tool's result, a launch's redaction) in one worker thread of this
            runtime, not on the event loop. The server turns it on, so a large launch or
            result never stops it answering; a plain script saves the thread hops.
        lease_ttl: seconds of the leases this runtime takes itself (a sub-agent's thread, a
            parent advanced after its child ended); a heartbeat renews them while they run.
        rate_limits: limits over the agents' own, shared through the store (`ratelimits`).

    A runtime holds no thread state between calls: every method loads what it needs, so any
    number of runtimes (processes, machines) can share one store.
    """

    def __init__(
        self,
        store: Store,
        *,
        agents: Iterable[Agent] = (),
        model: Model | None = None,
        observers: Sequence[Observer] = (),
        clock: Callable[[], datetime] = utcnow,
        offload: bool = False,
        lease_ttl: float = 120.0,
        rate_limits: RateLimits | None = None,
    ) -> None:
        self.store = store
        self.lease_ttl = lease_ttl
        self.offload = offload
        self._cpu: ThreadPoolExecutor | None = None
        self.model = model
        self.agents: dict[str, Agent] = {}
        self.refs: dict[str, str] = {}  # agent name -> where its code is (`add_agent`)
        self._renderers: dict[str, Renderer] = {}
        self._call_ids = rd.CallIdIndex()
        for agent in agents:
            self.add_agent(agent)
        self.observers: list[Observer] = list(observers)
        self.clock = clock
        self.tool_runs = ToolRuns(lambda: self.clock())
        self.limits = RateLimiter(store, rate_limits, lambda: self.clock())
        self.unsettled = Unsettled()  # what dropped answers' calls used (`budgets`)
        self._stopping = False
        self._decided: tuple[Thread, int, rd.Step] | None = None  # what ended the last held turn
        self._pipeline = Pipeline()  # held turns' commits in flight (docs/core.md)

    # -- configuration -------------------------------------------------------------------

    def add_agent(self, agent: Agent, *, ref: str | None = None) -> None:
        """Let this runtime advance `agent`'s threads (recording `ref`); build its renderer.

        Raises:
            ConfigError: another agent has the same name, or the prompt spec is wrong.
            PromptError: the agent's prompt file is missing or malformed (at start, not in
                the middle of a run).
        """
        existing = self.agents.get(agent.name)
        if existing is not None and existing is not agent:
            raise ConfigError(f"two different agents are named {agent.name!r}")
        if ref is not None:
            note_refs(self.refs, agent, ref)
        if existing is agent:
            return
        check_prices(agent, self.model)
        self._renderers[agent.name] = renderer_for(agent)
        self.agents[agent.name] = agent
        for sub in agent.sub_agents():  # their child threads run here too
            self.add_agent(sub)

    def renderer(self, name: str) -> Renderer:
        """The renderer of agent `name` (built when it joined)."""
        self.agent(name)
        return self._renderers[name]

    def agent(self, name: str) -> Agent:
        try:
            return self.agents[name]
        except KeyError:
            known = ", ".join(sorted(self.agents)) or "none"
            raise ConfigError(f"unknown agent {name!r}; this runtime has: {known}") from None

    def stop(self) -> None:
        """Ask running loops to stop after their current step (graceful shutdown)."""
        self._stopping = True

    async def _cpu_bound(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)`: in this runtime's worker thread when `offload` is on, else here.

        One thread, so renders (whose caches are plain dicts) never run two at a time.
        """
        if not self.offload:
            return fn(*args)
        if self._cpu is None:
            self._cpu = ThreadPoolExecutor(1, thread_name_prefix="threadline-cpu")
        return await asyncio.get_running_loop().run_in_executor(self._cpu, fn, *args)

    @property
    def stopping(self) -> bool:
        return self._stopping

    # -- launching and advancing ---------------------------------------------------------

    async def launch(
        self,
        agent: Agent | str,
        message: str,
        *,
        channel: str = "api",
        sender: str | None = None,
        metadata: dict[str, Any] | None = None,
        thread_id: str | None = None,
        advance: bool = True,
        budget: Budget | None = None,
        tree_budget: Budget | None = None,
    ) -> Thread:
        """Create a thread with its first user message; advance it unless `advance=False`;
        `budget` / `tree_budget` replace the agent's for this thread (and its tree)."""
        if isinstance(agent, Agent):
            self.add_agent(agent)
            name = agent.name
        else:
            name = self.agent(agent).name
        meta = thread_metadata(channel, metadata, self.refs.get(name))  # no caller's ref
        meta |= launch_metadata(self.agent(name), self.model, budget, tree_budget, meta)
        first = user_message(0, self.clock(), message, channel, sender, metadata)
        made = Thread(thread_id or new_thread_id(), name, metadata=meta)
        thread = await self._cpu_bound(launched, self.agent(name), made, first, self.clock())
        # Its COMMIT may go on behind the first model call (docs/core.md, "Pipelining").
        durable = await self.store.create_behind(thread)
        if durable is None:
            await self._notify(thread, thread.events)
        else:
            seen = as_of(thread) if self.observers else thread
            told = partial(self._notify, seen, thread.events[:]) if self.observers else None
            self._pipeline.start(thread, 0, durable, told)
        if advance:
            return await self.advance(thread)
        await self._pipeline.join(thread)
        return thread

    async def advance(
        self, thread: Thread | str, *, lease: Lease | None = None, max_steps: int | None = None
    ) -> Thread:
        """Perform steps until the thread waits (paused, awaiting someone, ended).

        Args:
            lease: append only while holding this lease (workers); a lost lease raises
                `LeaseLost` and writes nothing.
            max_steps: stop after this many steps even if more could run (tests, fairness).
        """
        thread = await self.advance_only(thread, lease=lease, max_steps=max_steps)
        if thread.status in TERMINAL and "parent_thread" in thread.metadata:
            await deliver(self, thread, lease)  # a sub-agent's end: its parent goes on
        return thread

    async def advance_only(
        self, thread: Thread | str, *, lease: Lease | None = None, max_steps: int | None = None
    ) -> Thread:
        """`advance`, without going on to the parent of a sub-agent thread that ended (its
        parent's run, which advanced it, records the outcome itself)."""
        if isinstance(thread, str):
            thread = await self.store.load(thread)
        agent = self.agent(thread.agent)
        if thread.status == Status.WAITING and any(c.child for c in thread.state.pending.values()):
            thread = await collect(self, thread)  # children that ended unreported (a crash)
        start, done = len(thread), 0
        try:
            while not self._stopping and (max_steps is None or done < max_steps):
                before = thread  # a step that reloads it returns another object
                known, self._decided = self._decided, None  # decided on this very thread
                if known is not None and known[0] is thread and known[1] == len(thread):
                    step = known[2]
                else:
                    step = rd.decide(agent, thread)
                try:
                    if not isinstance(step, rd.CallModel):  # only a model call goes ahead
                        await self._pipeline.join(thread)
                    if isinstance(step, rd.Wait):
                        break
                    budget = None if max_steps is None else max_steps - done
                    thread, steps = await self._perform(agent, thread, step, lease, budget)
                    done += steps
                except Refused as refused:
                    thread = await reload_refused(self.store, thread, refused)
                if thread is not before and ended_meanwhile(thread.events[start:]):
                    break  # cancelled meanwhile, resumed or not: this advance is over
            try:
                await self._pipeline.join(thread)
            except Refused as refused:
                thread = await reload_refused(self.store, thread, refused)
        finally:  # returns (or raises) only once all it appended is durable
            await self._pipeline.join(thread)
        return thread

    async def perform(
        self, agent: Agent, thread: Thread, step: rd.Step, *, lease: Lease | None = None
    ) -> Thread:
        """Carry out one step and checkpoint its events. Returns the (possibly reloaded) thread.

        One step exactly: a model's answer is committed alone, never together with the tool
        runs it leads to (`advance` does that, within its `max_steps`).
        """
        return (await self._perform(agent, thread, step, lease, 1))[0]

    async def _perform(
        self, agent: Agent, thread: Thread, step: rd.Step, lease: Lease | None, budget: int | None
    ) -> tuple[Thread, int]:
        """`perform`, allowed up to `budget` steps (None: no limit); returns the steps taken."""
        match step:
            case rd.CallModel():
                return await self._call_model(agent, thread, lease, budget)
            case rd.RunTool():
                return await self._run_tools(agent, thread, (step,), lease), 1
            case rd.RunTools(runs):
                return await self._run_tools(agent, thread, runs, lease), 1
            case rd.CheckGuards(calls):
                build = await guard_verdicts(agent, thread, calls)
                return await self._append_rebased(
                    thread, build, lease, still_valid=unjudged(calls)
                ), 1
            case rd.Wait():
                return thread, 1
        try:
            events = rd.step_events(step, thread.next_seq, self.clock())
            await self.append_events(thread, events, lease)
        except AppendConflict:
            thread = await self.store.load(thread.id)  # someone acted first; decide again
        return thread, 1

    async def _call_model(
        self, agent: Agent, thread: Thread, lease: Lease | None, budget: int | None
    ) -> tuple[Thread, int]:
        model = model_of(agent, self.model)
        # One rendering per call. Compaction, or escalation when even the minimum context
        # cannot fit (never an oversize request), is stored before the call, so the thread
        # stays replayable.
        self.store.due()  # a group commit's window may have passed while other turns ran
        renderer = self.renderer(agent.name)
        if not renderer.renders_in_thread:  # a rendering or summariser that may await
            prepared = await renderer.prepare(thread, model, self.clock())
        elif self.offload:
            prepared = await self._cpu_bound(renderer.prepare_now, thread, model, self.clock())
        else:
            prepared = renderer.prepare_now(thread, model, self.clock())
        if prepared.events:
            try:
                await self.append_events(thread, prepared.events, lease)
            except AppendConflict:
                return await self.store.load(thread.id), 1
        context = prepared.context
        if context is None or thread.status is not Status.RUNNING:
            return thread, 1
        if context.model_calls != thread.state.model_calls:  # a custom rendering's
            context = context.at_call(thread.state.model_calls)
        off = self.limits.off(agent)  # no limit: no permit to ask for, none to give back
        if not off:
            await self._pipeline.join(thread)
        permit = NO_LIMIT if off else await self.limits.model_call(agent, model, context)
        if permit.wait is not None:  # over a rate limit: a durable wait, not an error
            valid = still_decided(thread.next_seq)
            return await self._append_rebased(thread, permit.wait, lease, still_valid=valid), 1
        out: ModelOutput | None = None
        error: ModelError | None = None
        made = False  # the permit goes back however this ends (a refusal, a cancellation)
        try:
            if not (held := await reserve(self, agent, thread, model, context, lease)).go:
                return held.thread, 1  # a budget's escalation, or someone acted meanwhile
            started, made = time.perf_counter(), True
            try:
                out = await model.request(context)
            except ModelError as exc:
                error = exc
            except Exception as exc:  # a backend bug must not take the loop down
                error = ModelError(f"{type(exc).__name__}: {compact_error(exc)}")
            latency = (time.perf_counter() - started) * 1000
        finally:
            if permit is not NO_LIMIT:
                await (permit.done(out) if made else permit.unused())
        if again := await render_again(self, agent, thread, held, error, lease, budget):
            return again  # the server said its window: rendered under it, sent once more
        validated: dict[str, BaseModel] = {}
        taken = self._call_ids.taken(thread)
        answer = model_answer(agent, model, context, out, error, latency, thread, taken, validated)
        build = held.settle(answer, out, error)
        if budget is None or budget > 1:
            thread, steps = await self._turn(agent, thread, build, validated, lease, budget)
        else:
            valid, steps = still_decided(thread.next_seq), 1
            thread = await self._append_rebased(thread, build, lease, still_valid=valid)
            carry_validated(thread, validated)
        if held.dropped(thread):  # the answer was not written: settle what its call used
            thread = await held.settle_dropped(self, thread, lease)
        return thread, steps

    async def _run_tools(
        self,
        agent: Agent,
        thread: Thread,
        runs: Sequence[rd.RunTool],
        lease: Lease | None,
        *,
        started: bool = False,
    ) -> Thread:
        """Run the calls (concurrently when several, see `threadline.parallel`); each
        appends its own events through one shared tail. `started`: the `tool_started` of
        each is already written."""

        async def append(
            at: Thread, build: Callable[[int, datetime], list[Event]], ok: Callable[[Thread], bool]
        ) -> Thread:
            return await self._append_rebased(at, build, lease, still_valid=ok)

        tail = Tail(thread, append, shared=len(runs) > 1)
        await run_batch(
            agent, runs, lambda run: self._run_tool(agent, tail, run, lease, started=started)
        )
        return tail.thread

    async def _turn(
        self,
        agent: Agent,
        thread: Thread,
        answer: Callable[[int, datetime], list[Event]],
        validated: dict[str, BaseModel],
        lease: Lease | None,
        budget: int | None,
    ) -> tuple[Thread, int]:
        """Commit a model's answer together with the steps it leads to that need no
        write-ahead: one commit per read-only turn.

        The answer (`model_call` and its `tool_call`s) is held in memory while its calls to
        read-only tools run, then written in one append with their outcomes and with what
        follows without I/O (`done`, `approval_requested`, `human_request`, `escalated`).
        Re-running a read-only tool after a crash is harmless, and a crash before the commit
        loses only the model's answer, as a crash during the model call would. A tool with
        side effects keeps its write-ahead: its `tool_started` joins the held events, they
        commit, and only then does it run (its outcome is a second commit); calls with side
        effects run in parallel, or sub-agents, end the held turn before they start. If the
        commit conflicts (a human action landed meanwhile), the held events are dropped and
        the answer is re-based alone, as `perform` does; the read-only tools run again.
        """
        expected = thread.next_seq
        held = answer(expected, self.clock())
        if untrusted(held):  # a model's answer holds none (unless it was refused)
            held = await self._redacted(thread, held)
        thread.extend(held)  # in memory only until the append below
        carry_validated(thread, validated)

        async def hold(at: Thread, build: Outcome, ok: Callable[[Thread], bool]) -> Thread:
            events = await self._redacted(at, build(at.next_seq, self.clock()))
            at.extend(events)
            held.extend(events)
            return at

        steps, write_ahead, ahead, durable = 1, None, False, None
        try:
            while not self._stopping and (budget is None or steps < budget):
                step = rd.decide(agent, thread)
                # A model call is never held (the commonest end of a turn): no coroutine.
                call = type(step) is rd.CallModel
                done = False if call else await self._hold_step(agent, thread, step, hold, lease)
                if done is False:  # not carried out: the next `advance_only` step
                    self._decided = (thread, len(thread), step)
                    ahead = call  # a model call may go ahead of this commit
                    break
                steps += 1
                if isinstance(done, rd.RunTool):
                    write_ahead = done
                    break
            # The turn before is durable before this one is written (prepared meanwhile),
            # or this one is queued behind it, to share the next commit.
            flying = self._pipeline.flying(thread)  # else no join to wait for
            durable = await self.store.append_behind(
                thread.id,
                held,
                expected_seq=expected,
                lease=lease,
                after=partial(self._pipeline.join, thread) if flying else None,
                ahead=ahead,
                folded=thread.state,
            )
        except AppendConflict:
            rollback(thread, expected)
            still_valid = still_decided(expected)
            thread = await self._append_rebased(thread, answer, lease, still_valid=still_valid)
            carry_validated(thread, validated)
            return thread, 1
        except BaseException:
            rollback(thread, expected)
            raise
        if durable is not None:  # observers hear once durable
            seen = as_of(thread) if self.observers and ahead else thread  # as committed
            told = partial(self._notify, seen, held) if self.observers else None  # else no task
            self._pipeline.start(thread, expected, durable, told)
            if ahead:  # the next turn goes ahead
                return thread, steps
            await self._pipeline.join(thread)
        elif self.observers:
            await self._notify(thread, held)
        if write_ahead is not None:
            thread = await self._run_tools(agent, thread, (write_ahead,), lease, started=True)
        return thread, steps

    async def _hold_step(
        self, agent: Agent, thread: Thread, step: rd.Step, hold: Append, lease: Lease | None
    ) -> rd.RunTool | bool:
        """Carry out `step` inside a held turn (`_turn`), its events appended by `hold`.
        False: it cannot be held (a model call, a wait, calls with side effects in parallel,
        a sub-agent), and ends the turn; a `RunTool`: its `tool_started` was held, and it
        runs once that is committed; True: done."""
        runs = (
            step.runs
            if isinstance(step, rd.RunTools)
            else (step,)
            if isinstance(step, rd.RunTool)
            else ()
        )
        tools = [tool_of(agent, run.call) for run in runs]
        read_only = bool(runs)  # plain loops: this runs for every step of every turn
        for run, tool in zip(runs, tools, strict=True):
            if run.call.failed:
                return False  # a retry: its backoff and attempt start from a committed log
            if tool.kind != "function" or tool.side_effects:
                read_only = False
        if read_only:
            tail = Tail(thread, hold, shared=len(runs) > 1)
            await run_batch(agent, runs, lambda run: self._run_tool(agent, tail, run, lease))
            return True
        alone = len(runs) == 1 and not self.limits.limits_tool(agent, tools[0].name)
        if alone and tools[0].kind == "function":  # a rate-limited tool may wait: not held
            await hold(thread, tool_started(thread.id, runs[0].call, runs[0].attempt), _any)
            return runs[0]
        if isinstance(step, rd.CheckGuards):
            await hold(thread, await guard_verdicts(agent, thread, step.calls), _any)
            return True
        if isinstance(step, _HELD_ENDS):
            await hold(thread, partial(rd.step_events, step), _any)
            return True
        return False

    async def append_outcome(
        self,
        thread: Thread,
        build: Callable[[int, datetime], list[Event]],
        still_valid: Callable[[Thread], bool],
    ) -> Thread:
        """Append a call's outcome from elsewhere (a sub-agent's end) to a thread that no
        advancer holds (see `_append_rebased`)."""
        return await self._append_rebased(thread, build, None, still_valid=still_valid)

    async def _run_tool(
        self,
        agent: Agent,
        tail: Tail,
        run: rd.RunTool,
        lease: Lease | None,
        *,
        started: bool = False,
    ) -> None:
        """Run one call: `tool_started` first if the tool has side effects (unless `started`:
        the caller committed it), then its outcome, both appended at `tail`."""
        call, attempt, validated = run.call, run.attempt, run.args
        thread = tail.thread
        tool = tool_of(agent, call)
        if tool.kind == "agent":
            await start_child(self, tail, call, tool, validated, lease)
            return
        still_pending: Callable[[Thread], bool] = lambda t: call.call_id in t.state.pending  # noqa: E731
        gated = self.tool_runs.gated(tool, call)  # a backoff, an open breaker
        instead = await self.tool_runs.gate(tool, call) if gated else None
        limited = instead is None and self.limits.limits_tool(agent, tool.name)
        permit = await self.limits.tool_call(agent, tool.name) if limited else NO_LIMIT
        instead = instead or permit.wait  # over a rate limit: before `tool_started`
        if instead is not None:
            await tail.append(instead, still_pending)
            return
        made = False  # the permit goes back however this ends (acted on, a cancellation)
        try:
            if tool.side_effects and not started:
                thread = await tail.append(tool_started(thread.id, call, attempt), still_pending)
                if call.call_id not in thread.state.pending:
                    return
            made = True
            cpu = (lambda r: self._cpu_bound(stored_result, r)) if self.offload else None
            outcome = await self.tool_runs.run(tool, thread.id, run, cpu)
        finally:
            if permit is not NO_LIMIT:
                await (permit.done() if made else permit.unused())
        if outcome is not None:  # None: outcome unknown, `tool_started` stands alone (maybe ran)
            await tail.append(outcome, still_pending)

    async def _collect(self, thread: Thread) -> Thread:
        return await collect(self, thread)

    # -- appending -----------------------------------------------------------------------

    async def _redacted(self, thread: Thread, events: list[Event]) -> list[Event]:
        agent = self.agents.get(thread.agent)
        redactor = agent.context.storage_redactor if agent is not None else None
        if redactor is None or not untrusted(events):
            return events
        if self.offload:
            return await self._cpu_bound(redact_for_storage, redactor, events)
        return redact_for_storage(redactor, events)

    async def append_events(
        self, thread: Thread, events: Sequence[Event], lease: Lease | None
    ) -> None:
        """Checkpoint `events` at `thread`'s tail; `AppendConflict`: nothing written."""
        await self._pipeline.join(thread)  # appends of a thread stay in order
        events = await self._redacted(thread, list(events))
        await self.store.append(thread.id, events, expected_seq=thread.next_seq, lease=lease)
        thread.extend(events)
        await self._notify(thread, events)

    async def _notify(self, thread: Thread, events: Sequence[Event]) -> None:
        for observer in self.observers:
            try:
                outcome = observer(thread, events)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:  # noqa: S112 - an observer must never break a checkpointed step
                continue

    # -- human actions (factor 7): see `HumanActions` in runtime_actions.py -------------


_HELD_ENDS = (rd.AwaitApproval, rd.AwaitHuman, rd.Finish, rd.Escalate)
"""Steps a held turn writes without I/O (built once: `A | B` makes a union per test)."""


def _any(thread: Thread) -> bool:
    return True
