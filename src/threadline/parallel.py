"""Running the calls of one model answer together (factor 8's parallel tool calls).

`decide` returns `RunTools` when several calls of an answer can run; the runtime runs them
here:

* at most `Agent.max_parallel_tools` at once;
* calls sharing a resource key (`Agent.resource_keys`) one after another, in the order the
  model wrote them; calls without a key each in their own lane;
* every append goes through one `Tail`, one at a time, so the batch writes its events
  (`tool_started`, then each outcome as its tool finishes) in one dense, ordered log.

The order of the outcomes is the order the tools finished: a fact of the run, recorded, not
derived. Replay follows the record (`threadline.replay` accepts the outcomes of a batch in
any order); what is derived, and compared, is which calls the batch holds and how each is
started. A crash in the middle leaves some calls without an outcome: the next `decide`
makes a batch of exactly those.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from .agent import Agent
from .events import Event, Thread
from .reducer import RunTool

__all__ = ["Tail", "run_batch"]

Build = Callable[[int, datetime], list[Event]]
Append = Callable[[Thread, Build, Callable[[Thread], bool]], Awaitable[Thread]]


class Tail:
    """The newest form of a thread, shared by the concurrent calls of one batch.

    Invariant: appends run one at a time, each at the seq the previous one left, so the
    calls of a batch never conflict with each other. `shared`: several calls append
    concurrently (a lock orders them); a single call appends one event after another.
    """

    def __init__(self, thread: Thread, append: Append, *, shared: bool = True) -> None:
        self.thread = thread
        self._append = append
        self._lock = asyncio.Lock() if shared else None

    async def append(self, build: Build, still_valid: Callable[[Thread], bool]) -> Thread:
        """Append `build(seq, at)` at the tail (see `Runtime._append_rebased`)."""
        if self._lock is None:
            self.thread = await self._append(self.thread, build, still_valid)
            return self.thread
        async with self._lock:
            # Another call's append may have re-based the tail over a person's action (a
            # cancel withdrawing this call): what no longer applies is not written.
            if still_valid(self.thread):
                self.thread = await self._append(self.thread, build, still_valid)
            return self.thread


def lanes(agent: Agent, runs: Sequence[RunTool]) -> list[list[RunTool]]:
    """The runs grouped into lanes that may run concurrently: one lane per resource key
    (in call order), one per call that holds none."""
    keyed: dict[str, list[RunTool]] = {}
    out: list[list[RunTool]] = []
    for run in runs:
        key = agent.resource_key(run.call.tool, run.args)
        if key is None:
            out.append([run])
        elif key in keyed:
            keyed[key].append(run)
        else:
            keyed[key] = [run]
            out.append(keyed[key])
    return out


async def run_batch(
    agent: Agent, runs: Sequence[RunTool], run_one: Callable[[RunTool], Awaitable[None]]
) -> None:
    """Run `runs` by `run_one`, concurrently within the agent's limits (see the module).

    If one run raises (a lost lease, a conflicting advancer), the others are cancelled and
    that exception is raised: what they already appended stays, and the next `decide`
    resumes exactly the calls left without an outcome.
    """
    if len(runs) == 1:
        await run_one(runs[0])
        return
    limit = asyncio.Semaphore(agent.max_parallel_tools)

    async def lane(items: list[RunTool]) -> None:
        for run in items:
            async with limit:
                await run_one(run)

    try:
        async with asyncio.TaskGroup() as group:
            for items in lanes(agent, runs):
                group.create_task(lane(items))
    except BaseExceptionGroup as grouped:
        raise _first(grouped) from None


def _first(grouped: BaseExceptionGroup[BaseException]) -> BaseException:
    error = grouped.exceptions[0]
    return _first(error) if isinstance(error, BaseExceptionGroup) else error
