"""The one interface CLI commands are written against, and its local implementation.

`ThreadsAPI` is what a command may do to threads: one of two things that offer the same
methods with the same parameters:

* `threadline.client.Client`: a Threadline server over HTTP (`--server URL`);
* `LocalThreads`: a `Runtime` on the local store, advancing threads in this process.

`open_threads` picks one; after that no command knows which it has. Both return the wire
view (`ThreadOut`) from actions and the whole `Thread` from `load` and `settle`, so a
command prints a remote thread exactly like a local one.

`SchedulesAPI` is the same for cron schedules: `Client` (remote) or `LocalSchedules` (the
schedules beside the local store), picked by `open_schedules`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias, Unpack

from ..agent import Agent
from ..bootstrap import load_agents, open_runtime
from ..client import Client
from ..errors import ConfigError, InvalidAction, StoreError
from ..events import Budget, Event, Status, Thread, Waiting, summarize, utcnow
from ..launch import REF_KEY, LaunchOptions
from ..runtime import Observer, Runtime
from ..runtime_actions import Verdict, VerdictOptions
from ..schedules import schedule_from, view_of
from ..settings import Settings
from ..stores import open_store, schedule_store
from ..stores.base import ListOptions
from ..stores.schedules import Schedule, ScheduleStore
from ..wire import ScheduleBody, ScheduleOut, ThreadOut, ThreadPage, thread_out
from ..worker import advance_or_take_over, default_owner

__all__ = [
    "LocalSchedules",
    "LocalThreads",
    "SchedulesAPI",
    "ThreadsAPI",
    "agent_of",
    "open_schedules",
    "open_threads",
]


def agent_of(thread: Thread, agent_refs: Sequence[str] = ()) -> Agent:
    """The code of the agent that made `thread`: among `agent_refs`, else the reference its
    launch recorded (`agent_ref` in its metadata: absolute, or, recorded before references
    were made absolute, relative to the working directory, as it was then)."""
    for agent, _ in load_agents(agent_refs).values():
        if found := _named(agent, thread.agent):
            return found
    ref = thread.metadata.get(REF_KEY)
    if not ref:
        raise ConfigError(
            f"thread {thread.id} was made by agent {thread.agent!r}; pass --agent path.py:name"
        )
    ((agent, _),) = load_agents([str(ref)]).values()
    found = _named(agent, thread.agent)
    if found is None:
        raise ConfigError(
            f"thread {thread.id} was made by agent {thread.agent!r}, but its recorded "
            f"reference {ref} is agent {agent.name!r} now; pass --agent path.py:name"
        )
    return found


def _named(agent: Agent, name: str) -> Agent | None:
    """`agent` or one of its sub-agents (at any depth) named `name`: a child thread records
    the reference of the agent that was loaded, its root's."""
    seen: list[Agent] = []
    todo = [agent]
    while todo:
        one = todo.pop()
        if one.name == name:
            return one
        seen.append(one)
        todo += [s for s in one.sub_agents() if all(s is not x for x in seen)]
    return None


class LocalThreads:
    """Threads on a local `Runtime` (the `Client` methods, over the store): actions are
    written with channel `cli`, and `settle` advances the thread here, under a lease.

    Agents come from `agent_refs` or, for a thread, from the `agent_ref` its launch
    recorded; the configured model is resolved only when an agent that does not pin its
    own is about to run (so `threads show` needs no model configuration).

    Args:
        settings: the process settings (store, model, log, release mode).
        agent_refs: `path.py:name` references to load up front.
        observers: also told of every append (the CLI's live printer).
        note: where to say things the user should know (takeovers, scripted models).
    """

    def __init__(
        self,
        settings: Settings,
        agent_refs: Sequence[str] = (),
        *,
        observers: Sequence[Observer] = (),
        note: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.settings = settings
        loaded = load_agents(agent_refs)
        self.refs = {name: ref for name, (_, ref) in loaded.items()}
        self.runtime: Runtime = open_runtime(
            settings, loaded, with_model=False, observers=observers
        )
        self.note = note
        self.owner = f"cli:{default_owner()}"

    async def __aenter__(self) -> LocalThreads:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.runtime.store.close()

    # -- agents and model ------------------------------------------------------------------

    def _know(self, thread: Thread) -> None:
        """Make sure the runtime knows the thread's agent (loaded, or the recorded ref)."""
        if thread.agent not in self.runtime.agents:  # its threads record the same reference
            ref = thread.metadata.get(REF_KEY)
            self.runtime.add_agent(agent_of(thread), ref=str(ref) if ref else None)

    def _with_model(self, agent_name: str, *, announce: bool = False) -> None:
        agent = self.runtime.agent(agent_name)
        if agent.model is None and self.runtime.model is None:
            from ..models.registry import resolve_model

            self.runtime.model = resolve_model(
                self.settings.model, local_repack=self.settings.local_repack
            )
        model = agent.model or self.runtime.model
        if announce and model is not None and model.model_id.startswith("scripted"):
            self.note(f"using the scripted model {model.model_id} (canned answers, not a real LLM)")

    async def _thread(self, thread_id: str) -> Thread:
        thread = await self.runtime.store.load(thread_id)
        self._know(thread)
        return thread

    # -- ThreadsAPI -----------------------------------------------------------------------

    async def launch(self, agent: str, message: str, **options: Unpack[LaunchOptions]) -> ThreadOut:
        """Launch `agent`: a loaded agent's name or a `path.py:name` reference (the thread
        records the reference, its path made absolute, so later commands find the agent's
        code from any folder)."""
        name = next((n for n, ref in self.refs.items() if ref == agent), agent)
        if name not in self.runtime.agents:
            ((loaded, ref),) = load_agents([agent]).values()
            self.runtime.add_agent(loaded, ref=ref)  # its threads record `ref`
            name = loaded.name
            self.refs[name] = ref
        self._with_model(name, announce=True)
        thread = await self.runtime.launch(name, message, channel="cli", advance=False, **options)
        return thread_out(thread)

    async def get(self, thread_id: str) -> ThreadOut:
        return thread_out(await self.runtime.store.load(thread_id))

    async def load(self, thread_id: str) -> Thread:
        return await self.runtime.store.load(thread_id)

    async def list_threads(self, **options: Unpack[ListOptions]) -> ThreadPage:
        return ThreadPage.from_page(await self.runtime.store.list(**options))

    async def events(self, thread_id: str, *, after: int = -1, limit: int = 1000) -> list[Event]:
        return list(await self.runtime.store.events(thread_id, after=after, limit=limit))

    async def approve(
        self, thread_id: str, call_id: str, **verdict: Unpack[VerdictOptions]
    ) -> ThreadOut:
        await self._thread(thread_id)  # edited arguments are validated by the agent's tool
        return thread_out(await self.runtime.approve(thread_id, call_id, channel="cli", **verdict))

    async def approve_many(self, thread_id: str, verdicts: Sequence[Verdict]) -> ThreadOut:
        await self._thread(thread_id)
        return thread_out(await self.runtime.approve_many(thread_id, verdicts, channel="cli"))

    async def respond_instead(self, thread_id: str, call_id: str, text: str) -> ThreadOut:
        await self._thread(thread_id)
        thread = await self.runtime.respond_instead(thread_id, call_id, text, channel="cli")
        return thread_out(thread)

    async def respond(self, thread_id: str, request_id: str, text: str) -> ThreadOut:
        await self._thread(thread_id)  # an unknown agent fails before anything is written
        return thread_out(await self.runtime.respond(thread_id, request_id, text, channel="cli"))

    async def message(self, thread_id: str, text: str) -> ThreadOut:
        await self._thread(thread_id)
        return thread_out(await self.runtime.message(thread_id, text, channel="cli"))

    async def external_event(
        self, thread_id: str, name: str, payload: dict[str, Any] | None = None
    ) -> ThreadOut:
        await self._thread(thread_id)
        event = await self.runtime.external_event(thread_id, name, payload, source="cli")
        return thread_out(event)

    async def pause(self, thread_id: str, *, reason: str | None = None) -> ThreadOut:
        return thread_out(await self.runtime.pause(thread_id, by="cli", reason=reason))

    async def cancel(self, thread_id: str, *, reason: str | None = None) -> ThreadOut:
        return thread_out(await self.runtime.cancel(thread_id, by="cli", reason=reason))

    async def resume(self, thread_id: str) -> ThreadOut:
        """Resume a paused or escalated thread (or one waiting on sub-agents that ended
        unreported); a `running` one (left mid-way by a crashed process) needs no event:
        `settle` runs it on, taking over its lease."""
        thread = await self._thread(thread_id)
        if thread.status == Status.WAITING:
            thread = await _collect_or_due(self.runtime, thread)
        elif thread.status in (Status.PAUSED, Status.ESCALATED):
            thread = await self.runtime.resume(thread_id, by="cli")
        elif thread.status != Status.RUNNING:
            raise InvalidAction(f"thread {thread_id} is {thread.status.value}; nothing to resume")
        return thread_out(thread)

    async def raise_budget(self, thread_id: str, budget: Budget) -> ThreadOut:
        await self._thread(thread_id)  # the agent's budget is the one raised, if none other
        return thread_out(await self.runtime.raise_budget(thread_id, budget, by="cli"))

    async def fork(self, thread_id: str, *, at: int) -> ThreadOut:
        return thread_out(await self.runtime.fork(thread_id, at=at))

    async def settle(self, thread_id: str) -> Thread:
        """Advance the thread here until it stops, unless a live process holds it."""
        thread = await self._thread(thread_id)
        if thread.status in (Status.RUNNING, Status.WAITING):
            self._with_model(thread.agent)
            outcome = await advance_or_take_over(self.runtime, thread_id, owner=self.owner)
            if outcome.took_over_from:
                self.note(f"taking over from {outcome.took_over_from}, which is no longer running")
            elif outcome.held_by:
                self.note(f"{outcome.held_by} is advancing this thread; not advancing it here")
        return await self.runtime.store.load(thread_id)


async def _collect_or_due(runtime: Runtime, thread: Thread) -> Thread:
    """A waiting thread `resume` may go on with: one whose sub-agents ended unreported (the
    runtime collects them), or one whose wait is due (`settle` wakes it).

    Raises:
        InvalidAction: the wait is not over; says until when and why, or which sub-agent
            threads it waits for (a delegated call writes no `waiting` event).
    """
    with contextlib.suppress(InvalidAction):
        return await runtime.resume(thread.id, by="cli")
    until = thread.state.waiting_until
    if until is not None and until <= runtime.clock():
        return thread
    wait = next((e for e in reversed(thread.events) if isinstance(e, Waiting)), None)
    if wait is None:
        children = ", ".join(c.child for c in thread.state.pending.values() if c.child)
        raise InvalidAction(
            f"thread {thread.id} is waiting for its sub-agent threads ({children}); it goes "
            "on by itself when they end"
        )
    raise InvalidAction(
        f"thread {thread.id} is waiting {summarize(wait).text}; resume it then, or leave "
        "it to a `threadline worker`, which wakes it"
    )


ThreadsAPI: TypeAlias = LocalThreads | Client
"""What a command may do to threads: launch, inspect, act (`approve`, `respond`, `message`,
`pause`, `resume`, `fork`: they only write), `settle` (get the thread to where it stops:
awaiting someone, paused, ended) and `aclose`. No protocol restates the methods: mypy checks
every command against both implementations, and tests/cli/test_api.py that they take the
same parameters."""


def open_threads(
    server: str | None,
    settings: Settings,
    agent_refs: Sequence[str] = (),
    *,
    observers: Sequence[Observer] = (),
    note: Callable[[str], None] = lambda _: None,
) -> ThreadsAPI:
    """The server at `server` (key from THREADLINE_API_KEY), or the local store."""
    if server:
        return Client.from_settings(server, settings)
    return LocalThreads(settings, agent_refs, observers=observers, note=note)


class LocalSchedules:
    """Schedules beside the local store (`THREADLINE_STORE`), with the `Client`'s
    schedule methods.

    `agent` may be an agent's name or a `path.py:name` reference (the schedule stores the
    agent's name; run `threadline worker --agent path.py:name` to fire it).
    """

    def __init__(self, settings: Settings) -> None:
        self.store = open_store(settings.store)
        self.schedules: ScheduleStore = schedule_store(self.store)

    async def aclose(self) -> None:
        await self.store.close()

    async def _found(self, name: str) -> Schedule:
        found = await self.schedules.get(name)
        if found is None:
            raise ConfigError(f"no schedule named {name!r} (see `threadline schedules list`)")
        return found

    async def add_schedule(self, spec: ScheduleBody) -> ScheduleOut:
        if ":" in spec.agent:  # a path.py:name reference: the schedule keeps the agent's name
            ((loaded, _),) = load_agents([spec.agent]).values()
            spec = spec.model_copy(update={"agent": loaded.name})
        schedule = schedule_from(spec)
        try:
            await self.schedules.add(schedule)
        except StoreError as exc:
            raise InvalidAction(str(exc)) from None
        return await view_of(self.schedules, schedule, now=utcnow())

    async def list_schedules(self) -> list[ScheduleOut]:
        now = utcnow()
        return [await view_of(self.schedules, s, now=now) for s in await self.schedules.list()]

    async def get_schedule(self, name: str) -> ScheduleOut:
        return await view_of(self.schedules, await self._found(name), now=utcnow())

    async def remove_schedule(self, name: str) -> None:
        if not await self.schedules.remove(name):
            raise ConfigError(f"no schedule named {name!r} (see `threadline schedules list`)")

    async def pause_schedule(self, name: str) -> ScheduleOut:
        await self.schedules.set_paused(name, True, at=utcnow())
        return await self.get_schedule(name)

    async def resume_schedule(self, name: str) -> ScheduleOut:
        await self.schedules.set_paused(name, False, at=utcnow())
        return await self.get_schedule(name)


SchedulesAPI: TypeAlias = "LocalSchedules | Client"
"""Add, list, pause, resume and remove cron schedules, wherever they live."""


def open_schedules(server: str | None, settings: Settings) -> SchedulesAPI:
    """The server's schedules at `server` (key from THREADLINE_API_KEY), or the local
    store's."""
    if server:
        return Client.from_settings(server, settings)
    return LocalSchedules(settings)
