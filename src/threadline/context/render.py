"""Renderers: a thread -> the exact context one model call receives (factor 3).

Two formats ship, chosen per agent with `options["context_format"]` (or replaced wholesale
by `Agent.renderer`):

* `compact` (the default): the system prompt holds the instructions and every tool as a
  short signature (`notation.dump_schema`); the whole thread is one user message in which
  each event is a tagged block. A tool call is a tag named after the intent with its
  arguments as YAML-like lines; its result follows as `<result>` (call ids appear only when
  a result is not right after its call). Results use the compact notation: mappings as
  lines, uniform lists as tables.
* `messages`: the standard chat array: user / assistant messages, native assistant
  `tool_calls` and `tool` results, with tool definitions sent as `ToolSpec`s.

Both go through the same budget (`budget.plan_layout`), redaction and caches, and both are
pure functions of (agent, thread): no clock, no I/O other than reading the agent's already
loaded prompt. Per-event blocks and token counts are cached (events are frozen), so
rendering a long thread costs in proportion to the window, not the thread.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigError, TokenBudgetError
from ..events import Compacted, Event, Thread
from ..models.base import Context, Message, ToolSpec
from .budget import ContextBudget, Layout, known_window, plan_layout
from .notation import dump_block, dump_tools
from .redaction import Redactor, redactor_for
from .tokens import CountCache, TokenCounter, counter_for, counter_for_model

if TYPE_CHECKING:
    from ..agent import Agent
    from ..prompts import Prompt
    from .compaction import DigestCache

__all__ = [
    "COMPACT",
    "COMPACT_NATIVE",
    "ContextFormat",
    "Rendered",
    "bind_model",
    "compact_block",
    "context_state",
    "render",
    "render_context",
    "render_event",
]

PREFETCH_PREFIX = "prefetch-"
"""Call ids of pre-fetched tool calls start with this; their results are 'retrieved'."""

NATIVE_ANSWER = "Choose the next step by calling exactly one of the tools."

ANSWER_FORMAT = (
    'Answer with the next step as one JSON object: {"intent": <tool name>, "arguments": '
    "{...}}. Only the listed arguments are accepted."
)


class ContextFormat(Protocol):
    """How events become messages. Implement it to add a format (see `messages.py`)."""

    name: str
    native_tools: bool
    """True: tools travel as `Context.tools` (a backend sends them natively). False: they
    are part of the system text and `Context.tools` is empty, so no backend sends them twice
    (backends then constrain the answer with `Context.output_schema`)."""

    def system(self, base: str, tools: Sequence[ToolSpec]) -> str: ...

    def tools_text(self, tools: Sequence[ToolSpec]) -> str:
        """The text the tool definitions cost (in the system text or sent natively)."""
        ...

    def block(
        self, events: Sequence[Event], i: int, reduced: bool, max_tokens: int, counter: TokenCounter
    ) -> Any:
        """The payload of `events[i]` (None when it renders nothing)."""
        ...

    def tokens(self, payload: Any, counter: TokenCounter) -> int: ...

    def summary(self, from_seq: int, to_seq: int, text: str) -> Any: ...

    def assemble(self, payloads: Sequence[Any]) -> tuple[Message, ...]: ...


# -- the compact format ----------------------------------------------------------------


def _attrs(**kwargs: Any) -> str:
    return "".join(f" {k}={v}" for k, v in kwargs.items() if v not in (None, ""))


def _outcome_follows(events: Sequence[Event], i: int, call_id: str) -> bool:
    for j in (i + 1, i + 2):
        if j >= len(events):
            return False
        nxt = events[j]
        if nxt.kind in ("tool_result", "tool_error"):
            return getattr(nxt, "call_id", None) == call_id
        if nxt.kind != "tool_started":
            return False
    return False


def _call_precedes(events: Sequence[Event], i: int, call_id: str) -> bool:
    for j in (i - 1, i - 2):
        if j < 0:
            return False
        prev = events[j]
        if prev.kind == "tool_call":
            return getattr(prev, "call_id", None) == call_id
        if prev.kind != "tool_started":
            return False
    return False


def truncate_to(text: str, max_tokens: int, counter: TokenCounter, seq: int) -> str:
    """`text` cut to about `max_tokens`, ending with a pointer to the full event."""
    total = counter.count(text)
    if total <= max_tokens:
        return text
    keep = max(0, int(len(text) * max_tokens / total) - 40)
    cut = text.rfind("\n", 0, keep)
    head = text[: cut if cut > keep // 2 else keep]
    return f"{head}\n… [truncated: full result in event {seq}]"


def compact_block(
    events: Sequence[Event],
    i: int,
    *,
    reduced: bool = False,
    max_tokens: int = 800,
    counter: TokenCounter | None = None,
) -> str:
    """`events[i]` as a tagged block ('' for events the model does not need)."""
    e = events[i]
    match e.kind:
        case "user_message" | "human_response":
            who = getattr(e, "sender", None) or getattr(e, "by", None)
            return _tagged("user", _attrs(name=who), e.text)
        case "model_call":
            # Text beside native tool calls is the model talking (to the user or itself);
            # without tool calls the text *is* the intent and its tool_call shows it.
            if e.tool_calls and e.output.strip():
                return _tagged("assistant", "", e.output)
            return ""
        case "tool_call":
            args = e.arguments
            cid = None if _outcome_follows(events, i, e.call_id) else e.call_id
            tag = e.tool
            if set(args) == {"message"} and isinstance(args["message"], str):
                # The human tools: the message is the whole intent, and the answer (a human
                # response, or the end of the thread) needs no id to be matched.
                body, cid = args["message"], None
            elif not args:
                return f"<{tag}{_attrs(id=cid)}/>"
            else:
                body = dump_block(args)
            return _tagged(tag, _attrs(id=cid), body)
        case "tool_result":
            cid = None if _call_precedes(events, i, e.call_id) else e.call_id
            body = dump_block(e.result)
            if reduced and counter is not None:
                body = truncate_to(body, max_tokens, counter, e.seq)
            tag = f"{e.tool}_result"
            return _tagged(tag, _attrs(id=cid), body)
        case "tool_error":
            cid = None if _call_precedes(events, i, e.call_id) else e.call_id
            return f"<error{_attrs(id=cid)}>{e.error_type}: {e.message}</error>"
        case "invalid_output":
            return f"<invalid_output>{e.reason}</invalid_output>"
        case "approval":
            who = _attrs(id=e.call_id, by=e.by)
            if not e.approved:
                return f"<rejected{who}>{e.comment or ''}</rejected>"
            if e.edited_arguments is not None:
                return f"<approved{who} edited>\n{dump_block(e.edited_arguments)}\n</approved>"
            return f"<approved{who}/>"
        case "escalated":
            return f"<escalated>{e.reason}</escalated>"
        case "external_event":
            body = dump_block(e.payload) if e.payload else ""
            return f"<event{_attrs(name=e.name, source=e.source)}>\n{body}\n</event>"
        case "wait_timed_out":
            return f"<wait_timed_out{_attrs(event=e.event)}/>"
    return ""


def _tagged(tag: str, attrs: str, body: str) -> str:
    """`<tag attrs>body</tag>`, on one line when the body is one line."""
    if "\n" in body:
        return f"<{tag}{attrs}>\n{body}\n</{tag}>"
    return f"<{tag}{attrs}>{body}</{tag}>"


def render_event(event: Event) -> str:
    """One event as a tagged block, out of context (ids always shown)."""
    return compact_block([event], 0)


class CompactFormat:
    """The default: one user message of tagged blocks.

    Args:
        native_tools: True (the default for agents): tool definitions travel as
            `Context.tools` for the backend to send natively and the system text does not
            repeat them. False (`Agent.options["native_tools"] = False`): they are compact
            signatures in the system text and `Context.tools` is empty, so a backend asks
            for the JSON intent with `output_schema` instead; this is the smallest context.
    """

    name = "compact"

    def __init__(self, native_tools: bool = False) -> None:
        self.native_tools = native_tools
        if native_tools:
            self.name = "compact+native"

    def system(self, base: str, tools: Sequence[ToolSpec]) -> str:
        if self.native_tools:
            parts = [base.strip(), NATIVE_ANSWER]
        else:
            parts = [base.strip(), self.tools_text(tools), ANSWER_FORMAT]
        return "\n\n".join(p for p in parts if p)

    def tools_text(self, tools: Sequence[ToolSpec]) -> str:
        if self.native_tools:
            from .messages import MESSAGES

            return MESSAGES.tools_text(tools)
        sigs = dump_tools([(t.name, t.description, t.parameters) for t in tools])
        return f"## Tools\n{sigs}"

    def block(
        self, events: Sequence[Event], i: int, reduced: bool, max_tokens: int, counter: TokenCounter
    ) -> str | None:
        return (
            compact_block(events, i, reduced=reduced, max_tokens=max_tokens, counter=counter)
            or None
        )

    def tokens(self, payload: Any, counter: TokenCounter) -> int:
        return counter.count(payload) + 1 if payload else 0

    def summary(self, from_seq: int, to_seq: int, text: str) -> str:
        return _tagged("summary", f" events={from_seq}-{to_seq}", text)

    def assemble(self, payloads: Sequence[Any]) -> tuple[Message, ...]:
        body = "\n".join(p for p in payloads if p)
        return (Message("user", body),) if body else ()


COMPACT = CompactFormat()
"""The compact form with tool signatures in the system text (the smallest context)."""
COMPACT_NATIVE = CompactFormat(native_tools=True)
"""The compact form with tool definitions sent natively by the backend."""


def _format(name: str, agent: Agent) -> ContextFormat:
    if name == "compact":
        return COMPACT_NATIVE if agent.options.get("native_tools", True) else COMPACT
    if name == "messages":
        from .messages import MESSAGES

        return MESSAGES
    raise ConfigError(f"unknown context format {name!r}; use 'compact' or 'messages'")


# -- per-agent state -------------------------------------------------------------------


@dataclass(eq=False)
class AgentContextState:
    """What rendering for one agent reuses: its prompt, counter, budget and caches.

    Built on first use from the agent's options and prompt (which is loaded once, here).
    """

    prompt: Prompt | None
    counter: TokenCounter
    budget: ContextBudget
    redactor: Redactor | None
    blocks: CountCache = field(default_factory=CountCache)
    texts: CountCache = field(default_factory=lambda: CountCache(4096))
    digests: DigestCache | None = None
    last: tuple[Thread, int, Any, Rendered] | None = None
    bound: Any = None

    def count_text(self, text: str) -> int:
        cached = self.texts.get(text, text)
        if cached is None:
            cached = self.counter.count(text)
            self.texts.put(text, text, cached)
        return int(cached)


_STATES: weakref.WeakKeyDictionary[Agent, AgentContextState] = weakref.WeakKeyDictionary()


def context_state(agent: Agent) -> AgentContextState:
    """The agent's rendering state, built (and its prompt loaded) on first use."""
    state = _STATES.get(agent)
    if state is None:
        from ..prompts import prompt_for
        from .compaction import DigestCache

        state = AgentContextState(
            prompt=prompt_for(agent),
            counter=counter_for(agent),
            budget=ContextBudget.for_agent(agent),
            redactor=redactor_for(agent),
        )
        state.digests = DigestCache()
        _STATES[agent] = state
    return state


def bind_model(agent: Agent, model: Any) -> None:
    """Size an agent's budget for the model that will answer it (the runtime's default
    model, when the agent pins none): its tokenizer (`count_tokens`), its window
    (`context_window` or `n_ctx`, else known model ids) and its output cap
    (`max_output_tokens`). Explicit agent options always win; a pinned `Agent.model` was
    already used when the state was built. Called by the runtime before each model call;
    cheap when nothing changes.
    """
    if agent.model is not None or model is None:
        return
    state = context_state(agent)
    if state.bound is model:
        return
    opts = agent.options
    if "tokenizer" not in opts:
        state.counter = counter_for_model(model)
    if "budget" not in opts:
        budget = state.budget
        window = getattr(model, "context_window", None) or getattr(model, "n_ctx", None)
        if "context_window" not in opts:
            model_id = str(getattr(model, "model_id", ""))
            window = window or known_window(model_id) or budget.window
            budget = ContextBudget.sized(int(window), opts)
        cap = getattr(model, "max_output_tokens", None)
        if isinstance(cap, int) and cap > 0 and "max_output_tokens" not in opts:
            budget = replace(budget, max_output_tokens=min(budget.max_output_tokens, cap))
        state.budget = budget
    state.bound = model
    state.last = None


# -- rendering -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rendered:
    """A context and how it was built (for `threadline render` / `profile` and the runtime).

    Attributes:
        context: exactly what the model call receives.
        layout: which events are shown, reduced or summarised.
        sections: tokens per section: `system`, `tools`, `retrieved`, `summary` and
            `history:<event kind>`.
        compaction: `(from_seq, to_seq, summary)` the runtime should store as a `compacted`
            event before calling the model (None when none is needed).
    """

    context: Context
    layout: Layout
    sections: dict[str, int]
    compaction: tuple[int, int, str] | None


def _prompt_vars(agent: Agent, thread: Thread, tools: Sequence[ToolSpec]) -> dict[str, Any]:
    variables: dict[str, Any] = {
        "agent": agent.name,
        "tools": [{"name": t.name, "description": t.description} for t in tools],
        "thread": {"id": thread.id, "metadata": thread.metadata},
    }
    static = agent.options.get("prompt_vars")
    if isinstance(static, Mapping):
        variables.update(static)
    dynamic = thread.metadata.get("prompt_vars")
    if isinstance(dynamic, Mapping):
        variables.update(dynamic)
    return variables


def _base_prompt(
    agent: Agent, state: AgentContextState, thread: Thread, tools: Sequence[ToolSpec]
) -> tuple[str, str | None, str | None, str]:
    """(text, name, version, hash) of the system prompt before tool definitions."""
    if state.prompt is not None:
        text = state.prompt.render(_prompt_vars(agent, thread, tools))
        return text, state.prompt.name, state.prompt.version, state.prompt.sha256
    digest = hashlib.sha256(agent.instructions.encode()).hexdigest()
    return agent.instructions, agent.name, None, digest


def retrieved_indexes(thread: Thread) -> list[int]:
    """Pre-fetched tool calls and outcomes: they follow the first message, before any model
    call, so a bounded scan from the start finds them all."""
    out: list[int] = []
    for i, e in enumerate(thread.events):
        if e.kind in ("model_call", "model_error", "invalid_output"):
            break
        call_id = getattr(e, "call_id", "")
        if isinstance(call_id, str) and call_id.startswith(PREFETCH_PREFIX):
            if e.kind in ("tool_call", "tool_result", "tool_error"):
                out.append(i)
        elif i > 0 and e.kind not in ("tool_started", "user_message"):
            break
    return out


def render(agent: Agent, thread: Thread, fmt: str | ContextFormat | None = None) -> Rendered:
    """Render `thread` for `agent` under the agent's budget.

    Raises:
        TokenBudgetError: even the minimum context does not fit the window.
        PromptError: the agent's prompt template needs a variable nobody supplied.
    """
    state = context_state(agent)
    memo = state.last
    if memo is not None and memo[0] is thread and memo[1] == len(thread.events) and memo[2] == fmt:
        # The runtime renders twice per model call (prepare_call, then Agent.render): the
        # same thread object at the same length is the same input, so the same output.
        return memo[3]
    rendered = _render(agent, thread, fmt, state)
    state.last = (thread, len(thread.events), fmt, rendered)
    return rendered


def _render(
    agent: Agent, thread: Thread, fmt: str | ContextFormat | None, state: AgentContextState
) -> Rendered:
    from .compaction import summarise_span

    form = (
        fmt
        if fmt is not None and not isinstance(fmt, str)
        else _format(fmt or str(agent.options.get("context_format", "compact")), agent)
    )
    tools = [ToolSpec(t.name, t.description, t.schema()) for t in agent.visible_tools()]
    base, p_name, p_version, p_hash = _base_prompt(agent, state, thread, tools)
    system = form.system(base, tools)
    if state.redactor is not None:
        system = state.redactor.redact(system)
    tools_text = form.tools_text(tools)
    sys_tokens = state.count_text(system) + 4
    tools_tokens = state.count_text(tools_text) if tools_text else 0
    native = form.native_tools
    fixed = sys_tokens + (tools_tokens if native else 0) + 3
    events = thread.events
    budget = state.budget
    counter = state.counter
    redactor = state.redactor

    def payload(i: int, reduced: bool) -> tuple[Any, int]:
        e = events[i]
        reduced = reduced and e.kind == "tool_result"
        key = (thread.id, e.seq, form.name, reduced, counter.name, _neighbour_key(events, i))
        hit = state.blocks.get(key, e)
        if hit is None:
            block = form.block(events, i, reduced, budget.max_result_tokens, counter)
            if block is not None and redactor is not None:
                block = redactor.redact_payload(block)
            hit = (block, form.tokens(block, counter) if block is not None else 0)
            state.blocks.put(key, e, hit)
        return hit

    def summary_payload(i: int) -> Any:
        c = events[i]
        if not isinstance(c, Compacted):  # the planner only passes compacted events here
            raise TypeError(f"event {i} is not a compacted event")
        return form.summary(c.from_seq, c.to_seq, c.summary)

    def summary_tokens(i: int) -> int:
        return form.tokens(summary_payload(i), counter)

    retrieved = retrieved_indexes(thread)
    limit = budget.window - budget.max_output_tokens
    for _attempt in range(3):
        layout = plan_layout(
            events,
            budget=budget,
            fixed=fixed,
            tokens=lambda i, r: int(payload(i, r)[1]),
            summary_tokens=summary_tokens,
            virtual_summary_tokens=budget.summary_tokens,
            retrieved=retrieved,
        )
        compaction: tuple[int, int, str] | None = None
        if layout.compact is not None:
            lo, hi = layout.compact
            text = summarise_span(
                state, thread, hi, budget.summary_tokens, exclude=frozenset(retrieved)
            )
            if redactor is not None:
                text = redactor.redact(text)
            compaction = (lo, hi, text)
        sections: dict[str, int] = {
            "system": sys_tokens - (0 if native else tools_tokens),
            "tools": tools_tokens,
            "retrieved": 0,
            "summary": 0,
        }
        payloads: list[Any] = []
        for i in layout.retrieved:
            block, n = payload(i, layout.retrieved_reduced)
            if block is not None:
                payloads.append(block)
                sections["retrieved"] += n
        for kind, i, reduced in layout.units:
            if kind == "summary":
                if i == -1 and compaction is not None:
                    block = form.summary(compaction[0], compaction[1], compaction[2])
                else:
                    block = summary_payload(i)
                payloads.append(block)
                sections["summary"] += form.tokens(block, counter)
                continue
            block, n = payload(i, reduced)
            if block is None:
                continue
            payloads.append(block)
            key = f"history:{events[i].kind}"
            sections[key] = sections.get(key, 0) + n
        messages = form.assemble(payloads)
        # The planner adds up cached per-block counts; the request is counted whole, once,
        # so `input_tokens` is exact. Should boundary effects ever push it over the limit,
        # plan again with a wider margin rather than send it.
        exact = fixed + message_tokens(messages, counter)
        if exact <= limit:
            break
        budget = replace(budget, margin=budget.margin + exact - limit + 16)
    else:
        raise TokenBudgetError(exact, limit, "the rendered context overshoots its plan")
    context = Context(
        system=system,
        messages=messages,
        tools=tuple(tools) if native else (),
        output_schema=agent.output_schema(),
        max_output_tokens=budget.max_output_tokens,
        prompt_name=p_name,
        prompt_version=p_version,
        prompt_hash=p_hash,
        input_tokens=exact,
    )
    return Rendered(context, layout, sections, compaction)


def message_tokens(messages: Sequence[Message], counter: TokenCounter) -> int:
    """Tokens of chat messages as a chat API counts them (content, calls, framing)."""
    total = 0
    for m in messages:
        total += 4 + counter.count(m.content)
        for c in m.tool_calls:
            total += 8 + counter.count(c.name) + counter.count(c.arguments)
    return total


def _neighbour_key(events: Sequence[Event], i: int) -> int:
    """Tool call and result blocks depend on whether their partner is adjacent; encode
    that in the cache key (it changes once, when the outcome arrives)."""
    e = events[i]
    if e.kind == "tool_call":
        return 1 if _outcome_follows(events, i, e.call_id) else 0
    if e.kind in ("tool_result", "tool_error"):
        return 1 if _call_precedes(events, i, e.call_id) else 0
    return 0


def render_context(agent: Agent, thread: Thread) -> Context:
    """The context the next model call for `thread` receives (the default renderer).

    Pure: equal (agent, thread) give equal contexts. When the history must be compacted
    first, the context shows the summary the runtime will store before the call.
    """
    return render(agent, thread).context
