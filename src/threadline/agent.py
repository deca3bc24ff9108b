"""An agent: a prompt, a set of tools and the limits of its control flow (factor 10).

An `Agent` is plain configuration; it holds no state and does no I/O. The same agent
object decides for any number of threads at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from .context.settings import ContextSettings
from .errors import ConfigError
from .events import Budget
from .guards import FailurePolicy, GuardFunction, GuardLike, as_guard
from .rate_config import RateLimits
from .tools import (
    ApprovalPolicy,
    SubAgent,
    SubAgentTask,
    Tool,
    ToolRegistry,
    done_for_now,
    request_more_information,
)

if TYPE_CHECKING:
    from .events import Thread
    from .models.base import Context, Model

__all__ = [
    "Agent",
    "ApprovalExpiry",
    "Approvers",
    "ContextSettings",
    "Routes",
    "intent_schema",
]

RenderFunction = Callable[["Agent", "Thread"], "Context"]
"""A user's own rendering: `(agent, thread) -> Context` (it owns format and budget)."""

Approvers = Sequence[str] | Mapping[str, Sequence[str]]
"""Who may answer approvals: names for every tool, or tool name (or `"*"`) -> names."""

Routes = Mapping[str, str | Sequence[str]]
"""Where a thread's notices go, by kind (`approval`, `question`, `answer`, `escalation`):
targets like `"slack:#oncall"`, `"email:ops@example.com"`, or `"origin"` (where the thread
came from: the default for every kind). See docs/channels.md."""

ROUTE_KINDS = frozenset({"approval", "question", "answer", "escalation"})


@dataclass(frozen=True, slots=True)
class ApprovalExpiry:
    """What happens to an approval nobody answers (channels send the reminders).

    Attributes:
        after: how long the approval stays open.
        reminders: how long *before* the expiry to remind where the approval was sent
            (e.g. `(timedelta(minutes=10),)`).
        then: `reject` the call (the model hears "nobody approved in time") or
            `escalate` (send an escalation notice and keep the approval open).
    """

    after: timedelta
    reminders: tuple[timedelta, ...] = ()
    then: Literal["reject", "escalate"] = "reject"

    def __post_init__(self) -> None:
        if self.after <= timedelta(0):
            raise ConfigError("ApprovalExpiry.after must be positive")
        if self.then not in ("reject", "escalate"):
            raise ConfigError("ApprovalExpiry.then must be 'reject' or 'escalate'")
        if any(r <= timedelta(0) or r >= self.after for r in self.reminders):
            raise ConfigError("each reminder must be a positive time before the expiry")


@dataclass(eq=False)
class Agent:
    """A small, focused agent.

    Args:
        name: how threads refer to the agent (recorded on every thread).
        tools: the intents the model may choose. `request_more_information` and
            `done_for_now` are added unless `human_tools=False`.
        instructions: the system prompt text, used when no `prompt` file is given.
        prompt: a prompt template (a path or a `threadline.prompts.Prompt`); see docs/prompts.
        max_steps: model calls allowed between two human inputs before escalating.
        max_consecutive_errors: invalid outputs / tool errors / model errors in a row before
            escalating to a human (factor 9).
        max_breaker_waits: waits on an open circuit breaker in a row (no model call
            answered in between) before escalating: the provider has been down too long.
        model: a `Model` to use instead of the runtime's configured one (tests, pinning).
        renderer: builds the model's context from the thread, replacing the built-in
            formats (`(agent, thread) -> Context`).
        context: how the context is rendered, budgeted, summarised and redacted
            (`ContextSettings`).
        approvers: who may answer this agent's approvals: a list of names (every tool), or
            a mapping of tool name (or `"*"`) to names. None named: anyone with the
            `respond` scope.
        max_parallel_tools: how many calls of one answer run at once (read-only calls, and
            calls that need no approval or were approved).
        resource_keys: calls that must not run concurrently: tool name -> a resource key,
            or a function of the validated arguments giving one. Calls of one answer with
            the same key run one after another, in the order the model wrote them.
        max_repeated_calls: the same call (intent and arguments) in this many answers in a
            row is refused as an `invalid_output` telling the model so (then escalates if
            it persists, as any repeated error); 0 turns the loop guard off.
        routes: where notices of each kind go (`{"approval": "slack:#oncall"}`); a
            thread answers where it came from unless a kind is routed here.
        approval_expiry: an `ApprovalExpiry` for every tool, or tool name (or `"*"`) ->
            `ApprovalExpiry`: approvals nobody answers in time are rejected or escalated.
        responders: who may answer this agent's questions (`request_more_information`),
            recorded on each `human_request` and enforced like approvers. None named:
            anyone with the `respond` scope.
        guards: dispatch guards run on every validated call before it is dispatched:
            functions `(GuardCall) -> GuardDecision` (see `threadline.guards`), `Guard`s
            or `Judge`s (a second model's verdict); each allows, blocks with a reason the
            model reads, or requires approval.
        guard_failure: what a guard that fails (raises, times out, answers no verdict)
            decides: `"block"` (fail closed, the default), `"require_approval"`, or
            `"allow"` (fail open).
        rate_limits: calls per interval of model providers and tools, and tokens per
            interval of providers, kept across every process on the store
            (`threadline.ratelimits`); `THREADLINE_RATE_LIMITS` wins for what it names.
        budget: what each thread of this agent may use (model calls, tokens, USD): a call
            that could pass it is not made; the thread escalates with the figures.
        tree_budget: what a thread of this agent and every sub-agent thread under it may
            use together (the root's applies to the whole tree). See docs/composition.md.

    Invariants:
        * `registry` holds every tool version the agent knows; the model is shown only the
          newest version of each name.
    """

    name: str
    tools: Sequence[Tool] = ()
    instructions: str = ""
    prompt: Any = None
    max_steps: int = 20
    max_consecutive_errors: int = 3
    max_breaker_waits: int = 20
    model: Model | None = None
    renderer: RenderFunction | None = None
    human_tools: bool = True
    context: ContextSettings = field(default_factory=ContextSettings)
    approvers: Approvers = ()
    max_parallel_tools: int = 4
    resource_keys: Mapping[str, str | Callable[[Any], str]] = field(default_factory=dict)
    max_repeated_calls: int = 3
    routes: Routes = field(default_factory=dict)
    approval_expiry: ApprovalExpiry | Mapping[str, ApprovalExpiry] | None = None
    responders: Sequence[str] = ()
    guards: Sequence[GuardLike | GuardFunction] = ()
    guard_failure: FailurePolicy = "block"
    rate_limits: RateLimits | None = None
    budget: Budget | None = None
    tree_budget: Budget | None = None
    registry: ToolRegistry = field(init=False)
    dispatch_guards: tuple[GuardLike, ...] = field(init=False, default=())
    """`guards`, each as a `GuardLike` (functions wrapped in `Guard`)."""
    _output_schema: dict[str, Any] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ConfigError(f"agent {self.name}: max_steps must be at least 1")
        if self.max_consecutive_errors < 1:
            raise ConfigError(f"agent {self.name}: max_consecutive_errors must be at least 1")
        if self.max_parallel_tools < 1:
            raise ConfigError(f"agent {self.name}: max_parallel_tools must be at least 1")
        if self.max_repeated_calls < 0 or self.max_repeated_calls == 1:
            raise ConfigError(
                f"agent {self.name}: max_repeated_calls must be 0 (off) or at least 2"
            )
        if self.max_breaker_waits < 1:
            raise ConfigError(f"agent {self.name}: max_breaker_waits must be at least 1")
        if not isinstance(self.context, ContextSettings):
            raise ConfigError(
                f"agent {self.name}: context must be a threadline.ContextSettings, "
                f"not {type(self.context).__name__}"
            )
        if isinstance(self.approvers, str):
            raise ConfigError(f"agent {self.name}: approvers must be a list of names or a mapping")
        unknown = set(self.routes) - ROUTE_KINDS
        if unknown:
            raise ConfigError(
                f"agent {self.name}: routes for unknown kinds {sorted(unknown)}; "
                f"use {', '.join(sorted(ROUTE_KINDS))}"
            )
        if isinstance(self.responders, str):
            raise ConfigError(f"agent {self.name}: responders must be a list of names")
        self.responders = tuple(str(n) for n in self.responders)
        if self.guard_failure not in ("block", "require_approval", "allow"):
            raise ConfigError(
                f"agent {self.name}: guard_failure must be 'block', 'require_approval' or "
                f"'allow', not {self.guard_failure!r}"
            )
        self.dispatch_guards = tuple(as_guard(g) for g in self.guards)
        for name in ("budget", "tree_budget"):
            value = getattr(self, name)
            if not isinstance(value, Budget | None):
                raise ConfigError(f"agent {self.name}: {name} must be a threadline.Budget")
            if value is not None and value.empty:
                setattr(self, name, None)  # no limit of any kind: no budget
        tools = list(self.tools)
        if self.human_tools:
            names = {t.name for t in tools}
            tools += [t for t in (request_more_information, done_for_now) if t.name not in names]
        self.registry = ToolRegistry(tools)

    def add_tools(self, tools: Sequence[Tool]) -> None:
        """Register tools found after construction (an MCP server's `tools/list_changed`):
        each becomes the version the model is shown; older versions stay for old threads."""
        for t in tools:
            self.registry.register(t, newest=True)
        self._output_schema = None

    def as_tool(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        on_escalation: Literal["error", "escalate"] = "error",
        approval: ApprovalPolicy = "never",
    ) -> Tool:
        """This agent as a tool another agent may call (a sub-agent, factor 10).

        A call `{"task": "..."}` starts a child thread of this agent in the same store,
        linked to its parent (`parent_thread`, `parent_call` in its metadata). The parent
        waits durably, holding no process; the child's `done` message is the call's
        result; its escalation is the call's tool error, or escalates the parent too with
        `on_escalation="escalate"`. See docs/composition.md.
        """
        if on_escalation not in ("error", "escalate"):
            raise ConfigError(f"on_escalation must be 'error' or 'escalate', not {on_escalation!r}")
        return Tool.from_model(
            SubAgentTask,
            None,
            name=name or self.name,
            description=description
            or f"Hand a task to the {self.name} agent; its final answer is the result.",
            approval=approval,
            timeout=None,
            kind="agent",
            sub_agent=SubAgent(self, on_escalation),
        )

    def sub_agents(self) -> list[Agent]:
        """The agents this agent's tools hand calls to (`as_tool`), each once."""
        found: list[Agent] = []
        for t in self.registry:
            sub = t.sub_agent.agent if t.sub_agent is not None else None
            if isinstance(sub, Agent) and all(sub is not f for f in found):
                found.append(sub)
        return found

    def visible_tools(self) -> list[Tool]:
        """The newest version of each tool: what the model is shown."""
        return self.registry.latest()

    def output_schema(self) -> dict[str, Any]:
        """JSON Schema of one intent: a union discriminated on `intent` (cached)."""
        if self._output_schema is None:
            self._output_schema = intent_schema(self.visible_tools())
        return self._output_schema

    def resource_key(self, tool: str, args: Any) -> str | None:
        """The resource a call of `tool` holds while it runs (None: none; see
        `resource_keys`). A key function that fails holds the tool's name: such calls run
        one at a time rather than at once by mistake."""
        key = self.resource_keys.get(tool)
        if key is None or isinstance(key, str):
            return key
        try:
            return str(key(args))
        except Exception:
            return f"tool:{tool}"

    def approvers_for(self, tool: str) -> tuple[str, ...]:
        """The people allowed to answer an approval of `tool` (empty: anyone)."""
        table = self.approvers
        names = table.get(tool, table.get("*", ())) if isinstance(table, Mapping) else table
        return tuple(str(n) for n in names)

    def expiry_for(self, tool: str) -> ApprovalExpiry | None:
        """How an approval of `tool` expires (None: it waits as long as it takes)."""
        table = self.approval_expiry
        if table is None or isinstance(table, ApprovalExpiry):
            return table
        return table.get(tool, table.get("*"))


def intent_schema(tools: Sequence[Tool]) -> dict[str, Any]:
    """`{"intent": <name>, "arguments": {...}}` for each tool, as one `oneOf` schema."""
    variants = []
    for t in tools:
        variants.append(
            {
                "type": "object",
                "properties": {
                    "intent": {"type": "string", "const": t.name},
                    "arguments": t.schema(),
                },
                "required": ["intent", "arguments"],
                "additionalProperties": False,
            }
        )
    return {"oneOf": variants}
