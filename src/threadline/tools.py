"""Tools are structured outputs (factors 1 and 4).

A `Tool` is a typed signature plus the deterministic code that runs it. The model only ever
sees the JSON Schema of its arguments; the runtime validates the model's JSON against the
schema *before* anything runs, and dispatches the validated arguments to plain code.

Build one with the `@tool` decorator on a typed function, with `Tool.from_model` from a
pydantic model, or with `Tool.from_json_schema` from a published JSON Schema (OpenAI
function specs, MCP tools): then the model is shown that schema verbatim, arguments are
checked by a JSON Schema validator, and the function receives exactly the validated JSON.
A function may take a `ToolContext` parameter (anywhere in its signature); it is injected
by the runtime and never appears in the schema.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypedDict, TypeVar, Unpack, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .errors import ToolDefinitionError
from .json_schema import JsonArguments, JsonSchemaValidator
from .resilience import ToolBreaker, ToolRetry

__all__ = [
    "DONE_FOR_NOW",
    "ESCALATED_CHILD",
    "REQUEST_MORE_INFORMATION",
    "ApprovalPolicy",
    "Started",
    "SubAgent",
    "SubAgentTask",
    "Tool",
    "ToolContext",
    "ToolOptions",
    "ToolRegistry",
    "compact_validation_error",
    "done_for_now",
    "request_more_information",
    "run_started",
    "tool",
]

ApprovalPolicy: TypeAlias = Literal["never", "always"] | Callable[[Any], bool]
"""`never`, `always`, or a predicate on the validated arguments (a pydantic model)."""

_RETRY = ToolRetry()
_BREAKER = ToolBreaker()

ToolKind = Literal["function", "human", "finish", "agent"]
"""`agent`: a sub-agent (`Agent.as_tool`); the runtime runs it as a child thread."""


_T = TypeVar("_T")


class Started:
    """When a sync tool's worker thread began running it (`time.monotonic()`), None while
    it waits for a free worker: a tool's timeout bounds its run, not that wait. With many
    threads running sync tools at once, the event loop's default executor (a handful of
    workers) queues them, and a tool counted from its call timed out without running:
    17 of the 200 recorded airline runs advanced together on a loaded machine got a
    `TimeoutError` their run alone never had (docs/core.md, "Tool timeouts")."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: float | None = None


def run_started(started: Started, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """`fn(*args, **kwargs)` on a worker thread, noting when it began (`Started`)."""
    started.at = time.monotonic()
    return fn(*args, **kwargs)


class ToolOptions(TypedDict, total=False):
    """How a tool behaves: the keywords every way of building one takes (defaults in `Tool`).

    Attributes:
        version: with the name, the key a thread records (`name@version`).
        side_effects: the tool changes the world; a `tool_started` event is written before
            it runs, and after a crash it is re-run only if `idempotent`.
        idempotent: running it twice with the same `ToolContext.idempotency_key` is safe.
        approval: `never`, `always`, or a predicate on the validated arguments.
        timeout: seconds before the call is abandoned and recorded as a `TimeoutError`.
        retry: how often, and after what backoff, a failed run is tried again
            (`RetryableToolError`, or a timeout when running again is safe).
        breaker: when to stop calling the tool for a while after failures in a row
            (None: never).
    """

    version: str
    side_effects: bool
    idempotent: bool
    approval: ApprovalPolicy
    timeout: float | None
    retry: ToolRetry
    breaker: ToolBreaker | None


class _Settings(ToolOptions, total=False):
    """`ToolOptions` and the keywords a constructor of `Tool` sets for its kind of source."""

    kind: ToolKind
    context_param: str | None
    pass_model: bool
    sub_agent: SubAgent | None


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What the runtime tells a running tool.

    Attributes:
        idempotency_key: stable across retries of the same call (derived from thread and
            call id): pass it to the external system so a retried call is not applied twice.
        attempt: 1 on the first run, higher when tried again after a failure
            (`threadline.retries`) or re-run after a crash.
    """

    thread_id: str
    call_id: str
    idempotency_key: str
    attempt: int = 1


def idempotency_key(thread_id: str, call_id: str) -> str:
    """The key a call keeps across every retry and every worker."""
    return hashlib.sha256(f"{thread_id}:{call_id}".encode()).hexdigest()[:32]


class Tool:
    """A typed intent the model may choose, and the code that carries it out.

    Invariants:
        * `args_model` validates exactly what `schema()` describes.
        * `key` (`name@version`) identifies the tool in every `tool_call` event.
    """

    def __init__(
        self,
        name: str,
        args_model: type[BaseModel],
        fn: Callable[..., Any] | None,
        *,
        version: str = "1",
        description: str = "",
        side_effects: bool = False,
        idempotent: bool = False,
        approval: ApprovalPolicy = "never",
        timeout: float | None = 30.0,
        retry: ToolRetry = _RETRY,
        breaker: ToolBreaker | None = _BREAKER,
        kind: ToolKind = "function",
        context_param: str | None = None,
        pass_model: bool = False,
        validator: JsonSchemaValidator | None = None,
        sub_agent: SubAgent | None = None,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", name):
            raise ToolDefinitionError(
                f"tool name {name!r} must be 1-64 letters, digits, '_', '.' or '-'"
            )
        if approval not in ("never", "always") and not callable(approval):
            raise ToolDefinitionError(
                f"tool {name}: approval must be 'never', 'always' or a predicate"
            )
        self.name = name
        self.version = str(version)
        self.args_model = args_model
        self.fn = fn
        self.description = description.strip()
        self.side_effects = side_effects
        self.idempotent = idempotent
        self.approval = approval
        self.timeout = timeout
        self.retry = retry
        self.breaker = breaker
        self.kind: ToolKind = kind
        self._context_param = context_param
        self._pass_model = pass_model
        self._validator = validator
        self.sub_agent = sub_agent
        self._is_async = fn is not None and inspect.iscoroutinefunction(fn)
        self._schema: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def __repr__(self) -> str:
        return f"Tool({self.key})"

    def schema(self) -> dict[str, Any]:
        """JSON Schema of the arguments (cached; the object must not be mutated)."""
        if self._validator is not None:
            return self._validator.schema
        if self._schema is None:
            schema = self.args_model.model_json_schema()
            schema.pop("title", None)
            self._schema = schema
        return self._schema

    def spec(self) -> dict[str, Any]:
        """Name, description and parameters: what a model is shown."""
        return {"name": self.name, "description": self.description, "parameters": self.schema()}

    def schema_hash(self) -> str:
        blob = json.dumps({"key": self.key, **self.spec()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def validate(self, arguments: Any) -> BaseModel:
        """Validate the model's arguments. Raises pydantic's ValidationError."""
        if self._validator is not None:
            return self._validator.validate(arguments)
        return self.args_model.model_validate(arguments)

    def needs_approval(self, args: BaseModel) -> bool:
        if self.approval == "never":
            return False
        if self.approval == "always":
            return True
        return bool(self.approval(args.root if isinstance(args, JsonArguments) else args))

    @property
    def takes_context(self) -> bool:
        """Whether the function takes a `ToolContext` (`invoke` needs one then)."""
        return self._context_param is not None

    @property
    def in_thread(self) -> bool:
        """Whether its function is sync, run in a worker thread (`invoke`)."""
        return not self._is_async

    async def invoke(
        self, args: BaseModel, ctx: ToolContext | None, started: Started | None = None
    ) -> Any:
        """Run the tool on validated arguments. Sync functions run in a worker thread,
        which notes when it began in `started` (its timeout counts from then).
        `ctx` may be None for a tool that takes no context (`takes_context`)."""
        if self.fn is None:
            raise ToolDefinitionError(f"tool {self.key} has no function to run")
        # from_json_schema: fn(arguments[, ctx]). The exact type (JsonArguments has no
        # subclasses): a failing isinstance of a pydantic model class costs 3x more.
        if type(args) is JsonArguments:
            positional = (args.root, ctx) if self._context_param else (args.root,)
            if self._is_async:
                return await self.fn(*positional)
            if started is not None:
                return await asyncio.to_thread(run_started, started, self.fn, *positional)
            return await asyncio.to_thread(self.fn, *positional)
        if self._pass_model:
            call_args: dict[str, Any] = {"args": args}
        else:
            call_args = dict(args.__dict__)  # the fields (the model forbids extras)
        if self._context_param:
            call_args[self._context_param] = ctx
        if self._is_async:
            return await self.fn(**call_args)
        if started is not None:
            return await asyncio.to_thread(run_started, started, self.fn, **call_args)
        return await asyncio.to_thread(self.fn, **call_args)

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        **options: Unpack[ToolOptions],
    ) -> Tool:
        """Build a tool from a function whose parameters all carry type annotations."""
        tool_name = name or fn.__name__
        try:
            hints = get_type_hints(fn, include_extras=True)
        except Exception as exc:
            raise ToolDefinitionError(f"tool {tool_name}: cannot read annotations: {exc}") from exc
        fields: dict[str, Any] = {}
        context_param = None
        param_docs = _param_docs(fn.__doc__ or "")
        for param in inspect.signature(fn).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ToolDefinitionError(f"tool {tool_name}: *args/**kwargs are not allowed")
            if param.name not in hints:
                raise ToolDefinitionError(
                    f"tool {tool_name}: parameter {param.name!r} needs a type annotation"
                )
            annotation = hints[param.name]
            if annotation is ToolContext:
                context_param = param.name
                continue
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (
                annotation,
                Field(default, description=param_docs.get(param.name)),
            )
        model_name = "".join(part.title() for part in tool_name.split("_")) + "Args"
        args_model = create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)
        return cls._documented(
            tool_name,
            args_model,
            fn,
            description,
            fn.__doc__,
            context_param=context_param,
            **options,
        )

    @classmethod
    def from_model(
        cls,
        model: type[BaseModel],
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        kind: ToolKind = "function",
        sub_agent: SubAgent | None = None,
        **options: Unpack[ToolOptions],
    ) -> Tool:
        """Build a tool from a pydantic model; `fn(args, [ctx])` receives the validated model."""
        tool_name = name or _snake(model.__name__)
        return cls._documented(
            tool_name,
            model,
            fn,
            description,
            model.__doc__,
            kind=kind,
            context_param=_context_param(tool_name, fn, "args"),
            pass_model=True,
            sub_agent=sub_agent,
            **options,
        )

    @classmethod
    def _documented(
        cls,
        name: str,
        args_model: type[BaseModel],
        fn: Callable[..., Any] | None,
        description: str | None,
        doc: str | None,
        **settings: Unpack[_Settings],
    ) -> Tool:
        """A tool described by `description` or, when it is None, by the first paragraph
        of `doc` (the docstring of the function or model it was built from)."""
        given = description if description is not None else _summary(doc)
        return cls(name, args_model, fn, description=given, **settings)

    @classmethod
    def from_json_schema(
        cls,
        name: str,
        schema: dict[str, Any],
        fn: Callable[..., Any] | None = None,
        *,
        description: str = "",
        **options: Unpack[ToolOptions],
    ) -> Tool:
        """Build a tool from a published JSON Schema of its arguments.

        The model is shown `schema` verbatim (no titles, `$defs` or `additionalProperties`
        added); arguments are validated with `jsonschema` (draft 2020-12 by default) before
        anything runs; `fn(arguments)` or `fn(arguments, ctx)` receives exactly the validated
        JSON dict. An approval predicate receives the same dict.

        Raises:
            ToolDefinitionError: the schema is not a valid JSON Schema of an object, or `fn`
                takes neither one nor two parameters.
        """
        validator = JsonSchemaValidator(schema, name=name)
        context_param = _context_param(name, fn, "arguments")
        return cls(
            name,
            JsonArguments,
            fn,
            description=description,
            context_param=context_param,
            validator=validator,
            **options,
        )


def _context_param(tool: str, fn: Callable[..., Any] | None, first: str) -> str | None:
    """The name of `fn`'s context parameter: handlers take (`first`) or (`first`, ctx).

    Raises:
        ToolDefinitionError: `fn` takes neither one nor two parameters.
    """
    if fn is None:
        return None
    params = list(inspect.signature(fn).parameters.values())
    if len(params) == 2:
        return params[1].name
    if len(params) != 1:
        raise ToolDefinitionError(f"tool {tool}: handler must take ({first}) or ({first}, ctx)")
    return None


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    **options: Unpack[ToolOptions],
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    **options: Unpack[ToolOptions],
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a typed function into a `Tool`. Usable bare (`@tool`) or with options
    (`ToolOptions`: version, side_effects, idempotent, approval, timeout, retry, breaker)."""

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool.from_function(f, name=name, description=description, **options)

    return wrap(fn) if fn is not None else wrap


ESCALATED_CHILD = "SubAgentEscalated"
"""`ToolError.error_type` of a sub-agent call whose child thread escalated or failed."""


@dataclass(frozen=True, slots=True)
class SubAgent:
    """What a sub-agent tool (`Agent.as_tool`) hands its calls to.

    Attributes:
        agent: the `threadline.Agent` that works on each call in a child thread.
        on_escalation: `error`: the child's escalation is the call's tool error (the
            parent's model sees it and carries on); `escalate`: the parent escalates too.
    """

    agent: Any
    on_escalation: Literal["error", "escalate"] = "error"


class SubAgentTask(BaseModel):
    """Hand a task to a sub-agent; its final answer is this call's result."""

    model_config = ConfigDict(extra="forbid")
    task: str = Field(
        min_length=1,
        description="What the sub-agent should do, with everything it needs to know.",
    )


class ToolRegistry:
    """Tools keyed by `name@version`. `get(name)` without a version gives the newest."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._by_key: dict[str, Tool] = {}
        self._latest: dict[str, Tool] = {}
        for t in tools:
            self.register(t)

    def register(self, t: Tool, *, newest: bool = False) -> None:
        """Add `t`. It is shown for its name if its version sorts highest, or if `newest`
        (tools versioned by a hash of their schema, like MCP tools, have no order)."""
        if t.key in self._by_key and self._by_key[t.key] is not t:
            raise ToolDefinitionError(f"two different tools registered as {t.key}")
        self._by_key[t.key] = t
        current = self._latest.get(t.name)
        if newest or current is None or _version_key(t.version) >= _version_key(current.version):
            self._latest[t.name] = t

    def get(self, name: str, version: str | None = None) -> Tool | None:
        if version is None:
            return self._latest.get(name)
        return self._by_key.get(f"{name}@{version}")

    def latest(self) -> list[Tool]:
        """The newest version of each tool, in registration order of first appearance."""
        return list(self._latest.values())

    def names(self) -> list[str]:
        return list(self._latest)

    def __iter__(self) -> Any:
        return iter(self._by_key.values())

    def __contains__(self, key: str) -> bool:
        return key in self._by_key or key in self._latest


def compact_validation_error(tool_name: str, exc: ValidationError, limit: int = 3) -> str:
    """A short, model-readable reason: which argument, what was wrong."""
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unexpected argument"
        parts.append(f"{loc}: {msg}")
    more = exc.error_count() - limit
    suffix = f" (+{more} more)" if more > 0 else ""
    return f"invalid arguments for {tool_name}: " + "; ".join(parts) + suffix


def _version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    # Numbers sort numerically and before words, so "10" > "9" and "2" vs "beta" compares.
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-]", version))


def _summary(doc: str | None) -> str:
    if not doc:
        return ""
    text = inspect.cleandoc(doc)
    return text.split("\n\n", 1)[0].replace("\n", " ").strip()


def _param_docs(doc: str) -> dict[str, str]:
    """Parse `Args:` entries of a Google-style docstring into per-parameter descriptions."""
    out: dict[str, str] = {}
    text = inspect.cleandoc(doc)
    match = re.search(r"^Args:\s*\n((?:[ \t]+.*\n?)+)", text, re.M)
    if not match:
        return out
    for line in match.group(1).splitlines():
        m = re.match(r"\s+(\w+)(?:\s*\([^)]*\))?:\s*(.+)", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class RequestMoreInformation(BaseModel):
    """Ask the human a question when the request is ambiguous or missing something."""

    model_config = ConfigDict(extra="forbid")
    message: str = Field(description="The question to ask, in plain language.")


class DoneForNow(BaseModel):
    """Finish: the request is handled (or cannot be); tell the human the outcome."""

    model_config = ConfigDict(extra="forbid")
    message: str = Field(description="The final answer or summary for the human.")


request_more_information = Tool.from_model(
    RequestMoreInformation, name="request_more_information", kind="human"
)
done_for_now = Tool.from_model(DoneForNow, name="done_for_now", kind="finish")
REQUEST_MORE_INFORMATION = request_more_information.name
DONE_FOR_NOW = done_for_now.name
