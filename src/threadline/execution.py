"""A step's I/O as the events that record it: a tool run's outcome, a model's answer.

`execute` is the only place a tool's code runs. Every way a run can go wrong becomes one
`tool_error` (arguments that no longer validate, a timeout, an exception, a result that
cannot be stored); a tool that parks its thread (`threadline.waits.Park`) is recorded as
its result followed by a `waiting` event. The outcome is returned as a builder
`(seq, at) -> events`, so the runtime can place it at whatever tail the thread has when it
is written (a human action may land while the tool runs).

`execute` writes nothing: whether the write-ahead `tool_started` was committed first, and
whether the outcome is committed alone or together with the turn that chose the call, is
the runtime's decision (`Runtime.advance`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Generator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, NamedTuple, TypeVar, cast

from pydantic import BaseModel, ValidationError

from .agent import Agent
from .bounds import BoundsError, scrub_text, stored_result
from .errors import (
    CircuitOpen,
    ModelError,
    RetryableToolError,
    ThreadlineError,
    ToolOutcomeUnknown,
)
from .events import (
    Event,
    ModelCall,
    PendingCall,
    Thread,
    ToolError,
    ToolResult,
    ToolStarted,
    Waiting,
)
from .events import ModelError as ModelErrorEvent
from .loop_guard import call_history
from .models.base import Context, Model, ModelOutput, call_record
from .reducer import interpret
from .tools import Started, Tool, ToolContext, compact_validation_error, idempotency_key
from .waits import Park, breaker_wait

__all__ = [
    "NOT_VALID",
    "TIMED_OUT",
    "Bounded",
    "Deadline",
    "Failure",
    "Outcome",
    "ToolOutcome",
    "bounded",
    "carry_validated",
    "compact_error",
    "execute",
    "model_answer",
    "tool_of",
    "tool_started",
]

T = TypeVar("T")

TIMED_OUT = "TimeoutError"
"""`error_type` of a run that outlasted its tool's timeout."""

NOT_VALID = "ValidationError"
"""`error_type` of a call whose arguments no longer validate: the tool did not run."""

Outcome = Callable[[int, datetime], list[Event]]
"""What a step's I/O came to (a tool's outcome, a model's answer): the events recording it,
given the seq and time they get."""


def compact_error(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line: no stack trace, no multi-line dumps, nothing that
    cannot be stored (lone surrogates are replaced)."""
    text = scrub_text(" ".join(str(exc).split())) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tool_of(agent: Agent, call: PendingCall) -> Tool:
    """The registered tool a pending call names (`decide` escalates calls of tools no longer
    registered, so a missing one here is a bug)."""
    tool = agent.registry.get(call.tool, call.version)
    if tool is None:
        raise ThreadlineError(f"tool {call.tool}@{call.version} vanished")
    return tool


def tool_started(thread_id: str, call: PendingCall, attempt: int) -> Outcome:
    """The write-ahead record of a side-effecting call about to run (`tool_started`)."""
    key = idempotency_key(thread_id, call.call_id)

    def build(seq: int, at: datetime) -> list[Event]:
        return [
            ToolStarted(seq=seq, at=at, call_id=call.call_id, idempotency_key=key, attempt=attempt)
        ]

    return build


async def execute(
    tool: Tool,
    thread_id: str,
    call: PendingCall,
    attempt: int,
    validated: BaseModel | None,
    stored: Callable[[Any], Awaitable[Any]] | None = None,
) -> ToolOutcome | None:
    """Run `call` with `tool` once and return its outcome's builder.

    `stored` turns the tool's result into what is stored (`bounds.stored_result`, run where
    the runtime does its CPU-heavy work); by default it runs here.

    Returns None only when a non-idempotent tool with side effects raised
    `ToolOutcomeUnknown`: nothing may be recorded then (its `tool_started` stands alone,
    meaning "maybe ran", and `decide` escalates with the facts; the call is never re-sent
    by itself).
    """
    ctx = None
    if tool.takes_context:  # the key is a hash: spelled only for a tool that reads it
        key = idempotency_key(thread_id, call.call_id)
        ctx = ToolContext(thread_id, call.call_id, key, attempt)
    result: Any = None
    failure: Failure | None = None
    park: Park | None = None
    try:
        args = validated if validated is not None else tool.validate(call.arguments)
    except ValidationError as exc:
        failure = Failure(NOT_VALID, compact_validation_error(tool.name, exc), False)
    else:
        try:
            # A deadline, not wait_for: no extra task per call (see bench/overhead.py)
            started = Started() if tool.timeout is not None and tool.in_thread else None
            result = await bounded(tool.invoke(args, ctx, started), tool.timeout, started)
        except TimeoutError:
            failure = Failure(TIMED_OUT, f"no result after {tool.timeout:g}s", True)
        except RetryableToolError as exc:
            failure = Failure(type(exc).__name__, compact_error(exc), True)
        except ToolOutcomeUnknown as exc:
            if tool.side_effects and not tool.idempotent:
                return None
            failure = Failure(type(exc).__name__, compact_error(exc), True)
        except Exception as exc:
            failure = Failure(type(exc).__name__, compact_error(exc), False)
        else:
            if isinstance(result, Park):  # a durable wait (threadline.waits)
                park = result
                result = park.result if park.result is not None else park.describe()
            try:
                result = stored_result(result) if stored is None else await stored(result)
            except BoundsError as exc:  # stored results must load and render
                failure = Failure("ResultRejected", compact_error(exc), False)
            except (TypeError, ValueError) as exc:
                failure = Failure("TypeError", f"result is not JSON-serialisable: {exc}", False)
    return ToolOutcome(tool.name, call.call_id, result, failure, park)


def carry_validated(thread: Thread, validated: dict[str, BaseModel]) -> None:
    """The arguments were validated once, reading the answer: the pending calls carry the
    validated values, so deciding and running them validates nothing again."""
    for call_id, args in validated.items():
        pending = thread.state.pending.get(call_id)
        if pending is not None:
            pending.validated = args


def model_answer(
    agent: Agent,
    model: Model,
    context: Context,
    out: ModelOutput | None,
    error: ModelError | None,
    latency: float,
    thread: Thread,
    taken: Collection[str],
    validated: dict[str, BaseModel],
) -> Outcome:
    """The events of a model call that answered `out` (or failed with `error`) after
    `latency` ms: a `model_call` and the intents read from it, a `model_error`, or a wait on
    an open circuit breaker. Building them fills `validated` with each call's validated
    arguments (so they are validated once). `taken`: the call ids `thread` already used;
    the loop guard's history is that of `thread` as it is now."""
    history = call_history(thread, agent.max_repeated_calls)

    def build(seq: int, at: datetime) -> list[Event]:
        if isinstance(error, CircuitOpen):  # the provider is down: wait, not an error
            return [breaker_wait(error, seq, at)]
        if error is not None or out is None:
            failed = error or ModelError("no answer")
            return [
                ModelErrorEvent(
                    seq=seq,
                    at=at,
                    model=model.model_id,
                    error_type=type(failed).__name__,
                    message=compact_error(failed),
                    retryable=failed.retryable,
                    attempts=failed.attempts,
                )
            ]
        text = scrub_text(out.text)  # lone surrogates cannot be stored
        raw_calls = (
            tuple(
                c.model_copy(
                    update={
                        "id": None if c.id is None else scrub_text(c.id),
                        "name": scrub_text(c.name),
                        "arguments": scrub_text(c.arguments),
                    }
                )
                for c in out.tool_calls
            )
            if out.tool_calls
            else ()
        )
        fields = call_record(out, context, model.model_id, latency, text)
        fields["seq"] = seq
        fields["at"] = at
        fields["tool_calls"] = raw_calls
        # From one dict: ~3,000 instructions fewer than by keywords (docs/performance.md).
        call = ModelCall.model_validate(fields)
        validated.clear()
        intents = interpret(
            agent,
            text,
            raw_calls,
            seq=seq + 1,
            at=at,
            taken=taken,
            history=history,
            validated=validated,
        )
        return [call, *intents]

    return build


def bounded(
    run: Coroutine[Any, Any, T], seconds: float | None, started: Started | None = None
) -> Awaitable[T]:
    """`run` to await under a deadline of `seconds` (None: none): `Deadline`'s rules,
    its timer armed only once the run suspends (`Bounded`); with `started`, counted from
    when the run's worker thread began it (`Started`)."""
    return run if seconds is None else Bounded(run, seconds, started)


class Bounded(Generic[T]):
    """Await `run` under a `Deadline` of `seconds` from when it starts, armed only if the
    run suspends: a run that ends in its first step (a tool returning without awaiting
    anything) could not be interrupted by the timer anyway, and so costs none (arming and
    cancelling an event-loop timer is most of a cheap tool's run).

    Invariant: as `with Deadline(seconds): await run`: the same `TimeoutError`, measured
    from the start of the run, and a cancellation from outside stays one."""

    __slots__ = ("_run", "_seconds", "_started")

    def __init__(
        self, run: Coroutine[Any, Any, T], seconds: float, started: Started | None = None
    ) -> None:
        self._run = run
        self._seconds = seconds
        self._started = started

    def __await__(self) -> Generator[Any, None, T]:
        run = self._run
        start = asyncio.get_running_loop().time()
        try:
            pending = run.send(None)
        except StopIteration as done:
            return cast(T, done.value)
        with Deadline(self._seconds, start, self._started):
            while True:
                try:
                    yield pending  # the event loop's task waits for what the run waits for
                except BaseException as exc:  # handed to the run, as `await` does
                    try:
                        pending = run.throw(exc)
                    except StopIteration as done:
                        return cast(T, done.value)
                    continue
                return (yield from run.__await__())


class Deadline:
    """`asyncio.timeout(seconds)` for the task running a tool, as a plain context manager:
    the same cancellation and `TimeoutError`, without the two coroutines and the state
    machine of `asyncio.Timeout` (a tool run costs one timer, armed and cancelled).

    Invariant: a `CancelledError` from outside (the task cancelled by someone else, even
    while the deadline expires) propagates as such; only the deadline's own cancellation
    becomes `TimeoutError`.
    """

    __slots__ = ("_cancelling", "_expired", "_handle", "_seconds", "_start", "_started", "_task")

    def __init__(
        self, seconds: float | None, start: float | None = None, started: Started | None = None
    ) -> None:
        self._seconds = seconds
        self._start = start  # the loop's time the deadline counts from (None: entering)
        self._started = started  # a worker thread's start, which it counts from instead
        self._expired = False

    def __enter__(self) -> None:
        if self._seconds is None:
            return
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        loop = task.get_loop()
        start = loop.time() if self._start is None else self._start
        self._handle = loop.call_at(start + self._seconds, self._expire)

    def _expire(self) -> None:
        started = self._started
        if started is not None and self._seconds is not None:
            # Counted from the worker's start: still waiting for a worker, or begun later
            # than the deadline's start, the run has time left (checked only as the timer
            # fires: nothing a run that ends in time).
            now = time.monotonic()
            left = self._seconds if started.at is None else started.at + self._seconds - now
            if left > 0:
                loop = self._task.get_loop()
                self._handle = loop.call_at(loop.time() + left, self._expire)
                return
        self._expired = True
        self._task.cancel()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._seconds is None:
            return
        self._handle.cancel()
        if (
            self._expired
            and kind is asyncio.CancelledError
            and self._task.uncancel() <= self._cancelling
        ):
            raise TimeoutError from error


class Failure(NamedTuple):
    """How a tool run failed: what its `tool_error` records."""

    error_type: str
    message: str
    retryable: bool


@dataclass(slots=True)
class ToolOutcome:
    """A tool run's outcome: an `Outcome` (call it with seq and time for its events) that
    also says how the run went, for the retries and breakers (`threadline.retries`)."""

    tool: str
    call_id: str
    result: Any
    failure: Failure | None
    park: Park | None

    def __call__(self, seq: int, at: datetime) -> list[Event]:
        if self.failure is not None:
            error_type, message, retryable = self.failure
            return [
                ToolError(
                    seq=seq,
                    at=at,
                    call_id=self.call_id,
                    tool=self.tool,
                    error_type=error_type,
                    message=message,
                    retryable=retryable,
                )
            ]
        done: list[Event] = [
            ToolResult(seq=seq, at=at, call_id=self.call_id, tool=self.tool, result=self.result)
        ]
        park = self.park
        if park is not None:
            done.append(
                Waiting(seq=seq + 1, at=at, until=park.until, event=park.event, reason=park.reason)
            )
        return done
