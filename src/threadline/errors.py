"""Every exception Threadline raises, and the signals user code may raise on purpose.

Errors (something is wrong; callers catch these)::

    ThreadlineError
    ├── ConfigError              bad settings, unknown agent, missing optional extra
    │   └── MissingExtraError    an optional backend is not installed (names the pip command)
    ├── StoreError
    │   ├── ThreadNotFound       no thread with that id
    │   ├── AppendConflict       expected seq did not match: another writer won; nothing written
    │   ├── LeaseLost            the writer no longer holds the thread's lease; nothing written
    │   ├── CorruptEvent         a stored row does not parse as an event (names thread and seq)
    │   ├── StaleWriteAhead      a `tool_started` that does not start a pending call's next
    │   │                        attempt (a write-ahead delivered twice); nothing written
    │   ├── TreeBudgetExhausted  a reservation would pass its tree's budget; nothing written
    │   └── SchemaOutOfDate      the database schema is older than this code (names the command)
    ├── InvalidAction            the action does not fit the thread's state (e.g. approving a call
    │                            that is not pending); nothing was written
    ├── NotAllowed               the caller may not take this action (not a named approver)
    ├── ServerError              a Threadline server answered with an error (`--server` clients)
    ├── ToolDefinitionError      a tool's signature cannot be turned into a schema
    ├── RemoteToolError          a remote tool (MCP) answered with an error result
    ├── ReplayDivergence         replaying a thread produced a different event (names the seq)
    ├── RetrievalError           the retrieval index is unreachable or refused a request
    ├── ChannelError             a channel (Slack, email) could not send; carries `retryable`
    ├── ModelError               a provider failed (after retries); carries `retryable`
    │   ├── CircuitOpen          the provider's circuit breaker is open: the thread waits
    │   └── InvalidRequest       the provider says the request itself is invalid: never retried
    │       └── ContextOverflow  the request exceeds the server's window, which it said: the
    │                            runtime renders again under what was learned, once
    ├── PromptError              a prompt template is missing, malformed or misses a variable
    ├── MalformedVerdict         a judge's answer is not a verdict (the agent's guard_failure
    │                            policy decides the call; carries the judge call's usage)
    ├── LockMismatch             a prompt or tool schema differs from threadline.lock (names
    │                            the file)
    └── TokenBudgetError         even the minimum context does not fit the model's window

Signals (user code raises these to steer the runtime; they are not errors)::

    ToolSignal
    ├── RetryableToolError       the tool failed in a way worth retrying; recorded as retryable
    └── ToolOutcomeUnknown       the tool cannot tell whether its effect happened (a remote
                                 session dropped mid-call): a non-idempotent call records no
                                 outcome and takes the maybe-ran path (escalation)

Constructors only store their arguments: no I/O, no logging, no side effects.
"""

from __future__ import annotations

__all__ = [
    "AppendConflict",
    "ChannelError",
    "CircuitOpen",
    "ConfigError",
    "ContextOverflow",
    "CorruptEvent",
    "InvalidAction",
    "InvalidRequest",
    "LeaseLost",
    "LockMismatch",
    "MalformedVerdict",
    "MissingExtraError",
    "ModelError",
    "NotAllowed",
    "PromptError",
    "RemoteToolError",
    "ReplayDivergence",
    "RetrievalError",
    "RetryableToolError",
    "SchemaOutOfDate",
    "ServerError",
    "StaleWriteAhead",
    "StoreError",
    "ThreadNotFound",
    "ThreadlineError",
    "TokenBudgetError",
    "ToolDefinitionError",
    "ToolOutcomeUnknown",
    "ToolSignal",
    "TreeBudgetExhausted",
]


class ThreadlineError(Exception):
    """Root of every error Threadline raises."""


class ConfigError(ThreadlineError):
    """Settings, agent references or environment are wrong; the message says how to fix it."""


class MissingExtraError(ConfigError):
    """An optional backend's package is missing.

    Args:
        extra: the `threadline[...]` extra that provides it.
        package: the import that failed.
    """

    def __init__(self, extra: str, package: str) -> None:
        self.extra = extra
        self.package = package
        super().__init__(f"{package!r} is not installed; run: pip install 'threadline[{extra}]'")


class StoreError(ThreadlineError):
    """A store could not do what was asked."""


class ThreadNotFound(StoreError):
    """No thread has this id."""

    def __init__(self, thread_id: str) -> None:
        self.thread_id = thread_id
        super().__init__(f"no thread with id {thread_id!r}")


class AppendConflict(StoreError):
    """The append's expected seq is not the thread's next seq. Nothing was written."""

    def __init__(self, thread_id: str, expected_seq: int, actual_seq: int) -> None:
        self.thread_id = thread_id
        self.expected_seq = expected_seq
        self.actual_seq = actual_seq
        super().__init__(
            f"append to thread {thread_id} expected seq {expected_seq} but the thread is at "
            f"{actual_seq}: another writer appended first; reload and decide again"
        )


class LeaseLost(StoreError):
    """The writer's lease on the thread expired or was taken. Nothing was written."""

    def __init__(self, thread_id: str, owner: str) -> None:
        self.thread_id = thread_id
        self.owner = owner
        super().__init__(
            f"worker {owner!r} no longer holds the lease on thread {thread_id}; append refused"
        )


class CorruptEvent(StoreError):
    """A stored event does not parse. The row is left untouched for inspection."""

    def __init__(self, thread_id: str, seq: int, reason: str) -> None:
        self.thread_id = thread_id
        self.seq = seq
        self.reason = reason
        super().__init__(f"thread {thread_id} event {seq} is corrupt: {reason}")


class StaleWriteAhead(StoreError):
    """An appended `tool_started` does not start the next attempt of a pending call: the
    same write-ahead record delivered twice (an append sent again at a later seq, a
    second writer), or one for a call that has moved on. Nothing was written, and its
    writer must not run the tool: reload the thread and decide again.

    Attributes:
        seq: the refused event's seq.
        reason: which call and attempt, and why.
    """

    def __init__(self, thread_id: str, seq: int, reason: str) -> None:
        self.thread_id = thread_id
        self.seq = seq
        self.reason = reason
        super().__init__(f"thread {thread_id}: tool_started at {seq} refused: {reason}")


class TreeBudgetExhausted(StoreError):
    """An append's `budget_reserved` would pass its tree's budget. Nothing was written.

    Attributes:
        root: the tree's root thread.
        used / reserved: the tree's totals when refused, as (model calls, tokens, USD):
            used by settled calls, and held by reservations not yet settled.
    """

    def __init__(
        self, root: str, used: tuple[int, int, float], reserved: tuple[int, int, float]
    ) -> None:
        self.root = root
        self.used = used
        self.reserved = reserved
        super().__init__(f"the budget of tree {root} would be passed; reservation refused")


class SchemaOutOfDate(StoreError):
    """The database schema is older than this code expects."""

    def __init__(self, have: int, want: int, command: str = "threadline db migrate") -> None:
        self.have = have
        self.want = want
        super().__init__(
            f"database schema is at migration {have}, this code needs {want}; run: {command}"
        )


class InvalidAction(ThreadlineError):
    """The requested action does not fit the thread's current state. Nothing was written."""


class NotAllowed(ThreadlineError):
    """The caller is not allowed to take this action on this thread. Nothing was written."""


class ServerError(ThreadlineError):
    """A Threadline server refused a request or failed; carries its problem document.

    Attributes:
        status: the HTTP status (0 when the server could not be reached).
        problem: the `application/problem+json` body, when there was one.
    """

    def __init__(
        self, message: str, *, status: int = 0, problem: dict[str, object] | None = None
    ) -> None:
        self.status = status
        self.problem = problem or {}
        super().__init__(message)


class ToolDefinitionError(ThreadlineError):
    """A tool cannot be built from the given function or model."""


class RemoteToolError(ThreadlineError):
    """A remote tool (an MCP server's) ran and answered with an error result."""


class ReplayDivergence(ThreadlineError):
    """Replay re-derived an event that differs from the recorded one.

    Attributes:
        seq: the first event number that differs.
        expected: the recorded event, as a short description.
        got: the re-derived event, as a short description.
    """

    def __init__(self, thread_id: str, seq: int, expected: str, got: str) -> None:
        self.thread_id = thread_id
        self.seq = seq
        self.expected = expected
        self.got = got
        super().__init__(
            f"replay of thread {thread_id} diverged at event {seq}: "
            f"recorded {expected}, replay produced {got}"
        )


class RetrievalError(ThreadlineError):
    """The retrieval index (THREADLINE_RETRIEVAL) could not be reached or refused a request."""


class ModelError(ThreadlineError):
    """A model provider failed.

    Attributes:
        retryable: whether trying again later could succeed (429, 5xx, timeouts).
        status: the HTTP status, when there was one.
        retry_after: seconds the provider asked us to wait (`Retry-After`), when it did.
        attempts: how many requests were made before giving up (set by the retry layer).
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
    ):
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.attempts = attempts
        super().__init__(message)


class CircuitOpen(ModelError):
    """The provider failed repeatedly; calls fail fast until the breaker's cool-down ends."""

    def __init__(self, provider: str, retry_in: float) -> None:
        self.provider = provider
        super().__init__(
            f"circuit open for provider {provider!r} after repeated failures; "
            f"next attempt allowed in {retry_in:.1f}s",
            retryable=True,
            retry_after=retry_in,
        )


class InvalidRequest(ModelError):
    """The provider rejected the request itself (HTTP 400, 404 unknown model, 413, 422, or a
    5xx whose body is a request-validation message).

    Sending the same request again cannot succeed, so it is never retried and the thread
    escalates at once with the server's message instead of asking again.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, retryable=False, status=status)


class ContextOverflow(InvalidRequest):
    """The server refused the request for exceeding its context window, and said the window.

    The model that raised it has already kept what it learned (the window, and the
    server's count of the refused prompt: `models.calibration`); `learned` says whether
    that changed what the renderer plans in. When it did, the runtime renders the context
    again under it and makes the call once more instead of failing the step.

    Attributes:
        window: the window the server said it has.
        prompt_tokens: the server's count of the refused prompt, when it said.
        learned: whether the bound model's window or count correction moved.
    """

    def __init__(
        self,
        message: str,
        *,
        window: int,
        prompt_tokens: int | None = None,
        learned: bool = False,
        status: int | None = None,
    ) -> None:
        super().__init__(message, status=status)
        self.window = window
        self.prompt_tokens = prompt_tokens
        self.learned = learned


class PromptError(ThreadlineError):
    """A prompt template could not be loaded or rendered."""


class MalformedVerdict(ThreadlineError):
    """A judge model answered something that is not a verdict.

    Attributes:
        output: the answer, verbatim (untrusted model text).
        usage: what the judge's model call cost (`threadline.guards.GuardOutcome` fields).
    """

    def __init__(self, message: str, output: str = "", usage: dict[str, object] | None = None):
        super().__init__(message)
        self.output = output
        self.usage = dict(usage or {})


class LockMismatch(ThreadlineError):
    """A prompt or tool schema no longer matches the hash pinned in threadline.lock."""

    def __init__(self, path: str, locked: str, actual: str) -> None:
        self.path = path
        self.locked = locked
        self.actual = actual
        super().__init__(
            f"{path} changed since the build (lock {locked[:12]}, now {actual[:12]}); "
            "run `threadline build` and release again"
        )


class TokenBudgetError(ThreadlineError):
    """The smallest context the renderer can build (system prompt, tools, output reservation
    and the newest event) does not fit the model's window. Nothing is sent to the model; the
    runtime records `token_budget_exceeded` and escalates.

    Attributes:
        needed: tokens the minimum context takes.
        available: tokens the window allows for it.
    """

    def __init__(self, needed: int, available: int, detail: str = "") -> None:
        self.needed = needed
        self.available = available
        self.detail = detail
        super().__init__(
            f"context needs at least {needed} tokens but only {available} are available"
            + (f" ({detail})" if detail else "")
        )


class ToolSignal(Exception):
    """Base of exceptions user code raises on purpose to steer the runtime."""


class RetryableToolError(ToolSignal):
    """Raised by a tool to say its failure is transient; recorded with retryable=True."""


class ToolOutcomeUnknown(ToolSignal):
    """Raised by a tool with side effects that cannot know whether its effect happened.

    For a non-idempotent tool the runtime records no outcome: the call's `tool_started`
    stands alone, which is the maybe-ran state, and the thread escalates to a human with
    the facts instead of re-sending the call. From an idempotent tool or one without side
    effects it is recorded as a retryable error (running it again is safe).
    """


class ChannelError(ThreadlineError):
    """A channel (Slack, email, ...) could not send a notice.

    `retryable` False means retrying cannot help (a bad token, an unknown conversation):
    the outbox marks the notice failed at once instead of trying again later.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable
