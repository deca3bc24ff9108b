"""The `Renderer`: a thread -> the exact context one model call receives (factor 3).

One renderer is built per agent when the agent joins a `Runtime` (its prompt is loaded and
validated then, so a broken prompt fails at start, not in the middle of a run). It owns
what rendering reuses: the prompt, the token counter and budget for the model that answers,
caches of per-event blocks and counts (events are frozen), so rendering a long thread
costs in proportion to the window, not the thread; and each thread's previous rendering,
which the next render extends by the new events when nothing else changed
(`incremental.Tails`: the same result as the full plan, in proportion to the new events).

`prepare(thread, model, at)` is what the runtime calls before each model call: it renders
once and returns the events to store first (a `compacted` summary, or `token_budget_exceeded`
plus `escalated` when even the minimum context cannot fit or the prompt cannot render)
together with the context to send (`prepared.Prepared`). `render(thread)` is the same
rendering without the events (for `threadline render` / `profile` and tests); it is a pure
function of the thread for a given binding (no clock, no I/O), but for the prompt-cache
read mark, which depends on what this renderer rendered for the thread's latest call
(`prompt_cache`).

Both formats (`compact`, `messages`) go through the same budget (`budget.plan_layout`) and
redaction. The renderer knows no agent: it is given the agent's name, instructions, loaded
prompt, tool specs, output schema and `ContextSettings`.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from ..errors import ConfigError, PromptError, TokenBudgetError
from ..events import Compacted, Event, Thread, ToolCall, ToolError, ToolResult
from ..models.base import Context, Message, Model, ToolSpec
from ..models.calibration import Calibration
from .base import ContextFormat, PromptTemplate, Rendered, message_tokens, truncate_to
from .budget import ContextBudget, Layout, dynamic_share, plan_layout
from .compact import COMPACT, COMPACT_NATIVE, call_precedes, outcome_follows
from .compaction import DigestCache, previous_summary
from .incremental import Tails, final_unit
from .messages import MESSAGES
from .prepared import Prepared, prepared, refused
from .prompt_cache import Marks, SentBodies, body_marks, latest_model_call, surely_final
from .redaction import Redactor
from .retrieved import best_relevance, retrieved_indexes
from .settings import ContextSettings
from .tokens import CountCache, TokenCounter

__all__ = ["Prepared", "Renderer", "best_relevance", "format_named", "retrieved_indexes"]


CustomRender = Callable[[Thread], Context]
"""A user's own rendering: the thread -> the context (it owns budget and format)."""


def format_named(name: str, native_tools: bool = True) -> ContextFormat:
    """The built-in format called `name` (`compact` or `messages`)."""
    if name == "messages":
        return MESSAGES
    if name == "compact":
        return COMPACT_NATIVE if native_tools else COMPACT
    raise ConfigError(f"unknown context format {name!r}; use 'compact' or 'messages'")


def _neighbour_key(events: Sequence[Event], i: int) -> int:
    """Tool call and result blocks depend on whether their partner is adjacent; encode
    that in the cache key (it changes once, when the outcome arrives)."""
    e = events[i]
    # Exact types, not `isinstance`: event classes have no subclasses, and a failing
    # `isinstance` goes through pydantic's ABC metaclass (~1,100 instructions).
    if type(e) is ToolCall:
        return 1 if outcome_follows(events, i, e.call_id) else 0
    if type(e) is ToolResult or type(e) is ToolError:
        return 1 if call_precedes(events, i, e.call_id) else 0
    return 0


def _redact_payload(redactor: Redactor, payload: Any) -> Any:
    """A rendered block with secrets masked: a string, or a tuple of `Message`s."""
    if isinstance(payload, str):
        return redactor.redact(payload)
    if isinstance(payload, tuple):
        return tuple(_redact_message(redactor, m) if isinstance(m, Message) else m for m in payload)
    return payload


def _redact_message(redactor: Redactor, m: Message) -> Message:
    calls = tuple(
        c.model_copy(update={"arguments": redactor.redact(c.arguments)}) for c in m.tool_calls
    )
    return Message(m.role, redactor.redact(m.content), calls, m.tool_call_id, m.name)


class Renderer:
    """Renders one agent's threads (see the module docstring).

    Args:
        name: the agent's name (a prompt variable, and the prompt name without a file).
        instructions: the system text when there is no `prompt`.
        prompt: the loaded prompt template, or None.
        tools: the tools the model is shown.
        output_schema: JSON Schema of one intent (sent as `Context.output_schema`).
        settings: the agent's `ContextSettings`.
        custom: a user's own rendering, replacing the built-in formats.
        incremental: extend a thread's previous rendering by its new events when the
            result is the same (`incremental.Tails`); False always plans from the window.

    Attributes:
        renders: how many renderings this renderer has made (one per model call).
    """

    def __init__(
        self,
        *,
        name: str,
        instructions: str = "",
        prompt: PromptTemplate | None = None,
        tools: Sequence[ToolSpec] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ContextSettings | None = None,
        custom: CustomRender | None = None,
        incremental: bool = True,
    ) -> None:
        self.name = name
        self.instructions = instructions
        self.prompt = prompt
        self.tools = tuple(tools)
        self.output_schema = output_schema or {}
        self.settings = settings or ContextSettings()
        self.custom = custom
        self.format = format_named(self.settings.format, self.settings.native_tools_for(None))
        self.redactor = self.settings.redactor
        self.counter: TokenCounter = self.settings.counter_for(None)
        self.budget: ContextBudget = self.settings.budget_for(None)
        self.renders = 0
        self._bound: Model | None = None
        self._calibration: Calibration | None = None
        self._calibrated = 0  # the calibration's version the budget was sized for
        self._tools_text: Callable[[Sequence[ToolSpec]], str] | None = None
        self._instructions_hash = hashlib.sha256(instructions.encode()).hexdigest()
        self._blocks = CountCache()
        self._texts = CountCache(4096)
        self._digests = DigestCache()
        self._fixed: dict[tuple[str, str, str], tuple[str, int, int]] = {}
        self._tails = Tails() if incremental else None
        self._sent = SentBodies()

    # -- binding to the model that answers ---------------------------------------------

    def bind(self, model: Model | None) -> None:
        """Size the budget and counter for `model` (cheap when it is the bound one and
        its calibration has not moved since: `models.calibration`)."""
        if model is None:
            return
        calibration = self._calibration
        if model is self._bound:
            if calibration is not None and calibration.version != self._calibrated:
                self.budget = self._calibrated_budget(model, calibration)
            return
        self.counter = self.settings.counter_for(model)
        profile = model.profile
        self._calibration = calibration = profile.calibration
        self.budget = self._calibrated_budget(model, calibration)
        self.format = format_named(self.settings.format, self.settings.native_tools_for(model))
        tools_text = profile.tools_text
        if tools_text is not self._tools_text:
            self._fixed.clear()  # the tools' cost is counted from another text now
            self._tools_text = tools_text
        self._bound = model

    def _calibrated_budget(self, model: Model, calibration: Calibration | None) -> ContextBudget:
        """The settings' budget for `model`, in the window its calibration allows: the
        window the server said (sized as if declared: a smaller window reserves less for
        the output, results and summary), its prompt room divided by the count correction
        (`Calibration.fit`)."""
        learned = calibration.window if calibration is not None else None
        budget = self.settings.budget_for(model, window=learned)
        if calibration is None:
            return budget
        self._calibrated = calibration.version
        window = calibration.fit(budget.window, budget.max_output_tokens)
        return budget if window >= budget.window else replace(budget, window=window)

    # -- the runtime's entry point -------------------------------------------------------

    async def prepare(self, thread: Thread, model: Model | None, at: datetime) -> Prepared:
        """Render the next model call's context once, with the events to store first.

        Never raises for budget or prompt problems: those become events (`escalated`), so
        the runtime records them instead of crashing or sending an oversize request.
        """
        self.bind(model)
        if self.custom is not None:
            self.renders += 1
            return Prepared([], self.custom(thread))
        try:
            rendered = await self._render_async(thread, self.format)
        except (TokenBudgetError, PromptError) as exc:
            return refused(exc, thread.next_seq, at)
        return prepared(rendered, thread.next_seq, at)

    @property
    def renders_in_thread(self) -> bool:
        """Whether `prepare_now` can stand in for `prepare`: nothing to await (the built-in
        formats and digest; no custom rendering or summariser of the user's own)."""
        return self.custom is None and self.settings.summariser is None

    def prepare_now(self, thread: Thread, model: Model | None, at: datetime) -> Prepared:
        """`prepare` without an event loop, for a worker thread (see `renders_in_thread`).

        A server renders there, so rendering a large thread never holds its event loop.
        Renders of one renderer must not run in two threads at once (its caches are
        plain dicts): the runtime sends them all to one worker thread.

        Raises:
            TypeError: the renderer needs to await something (`renders_in_thread` is False).
        """
        if not self.renders_in_thread:
            raise TypeError("this renderer awaits its custom rendering or summariser")
        self.bind(model)
        try:
            rendered = self.render(thread)
        except (TokenBudgetError, PromptError) as exc:
            return refused(exc, thread.next_seq, at)
        return prepared(rendered, thread.next_seq, at)

    # -- rendering ---------------------------------------------------------------------

    def context(self, thread: Thread) -> Context:
        """The context the next model call receives (the custom renderer's, if any)."""
        if self.custom is not None:
            self.renders += 1
            return self.custom(thread)
        return self.render(thread).context

    def render(self, thread: Thread, fmt: str | ContextFormat | None = None) -> Rendered:
        """Render `thread` under the bound budget, summarising with `digest` when the
        history must be compacted (the summary the runtime would store is shown).

        Raises:
            TokenBudgetError: even the minimum context does not fit the window.
            PromptError: the prompt template needs a variable nobody supplied.
        """
        render, fast = self._begin(thread, self._form(fmt))
        if fast is not None:
            return fast
        attempts = self._attempts(render)
        summary: str | None = None
        try:
            while True:
                layout, budget = attempts.send(summary)
                summary = render.digest(layout, budget)
        except StopIteration as done:
            rendered: Rendered = done.value
            return rendered

    async def _render_async(self, thread: Thread, form: ContextFormat) -> Rendered:
        """`render`, with the settings' summariser (which may be async) when compacting."""
        render, fast = self._begin(thread, form)
        if fast is not None:
            return fast
        attempts = self._attempts(render)
        summaries: dict[tuple[int, int] | None, str] = {}
        summary: str | None = None
        try:
            while True:
                layout, budget = attempts.send(summary)
                if layout.compact not in summaries:
                    summaries[layout.compact] = await render.summarise(layout, budget)
                summary = summaries[layout.compact]
        except StopIteration as done:
            rendered: Rendered = done.value
            return rendered

    def _begin(self, thread: Thread, form: ContextFormat) -> tuple[_Pass, Rendered | None]:
        """A new pass over `thread`, and its extension of the previous rendering, if any."""
        self.renders += 1
        render = _Pass(self, thread, form)
        return render, self._tails.extend(render) if self._tails is not None else None

    def _attempts(
        self, render: _Pass
    ) -> Generator[tuple[Layout, ContextBudget], str | None, Rendered]:
        """Plan and assemble `render`, widening the margin when the exact count overshoots
        the plan (three tries). Each layout that compacts is yielded with its budget, and
        the caller sends back the summary of the span it compacts (digest or summariser)."""
        budget = self.budget
        for _attempt in range(3):
            layout = render.plan(budget)
            summary = (yield layout, budget) if layout.compact is not None else None
            rendered, exact = render.assemble(layout, budget, summary)
            if rendered is not None:
                if self._tails is not None:  # what the next render may extend
                    self._tails.seed(render, rendered)
                return rendered
            budget = replace(budget, margin=budget.margin + exact - render.limit + 16)
        raise TokenBudgetError(exact, render.limit, "the rendered context overshoots its plan")

    def fixed_parts(self, base: str, form: ContextFormat) -> tuple[str, int, int]:
        """(system text, its tokens, tokens of the tool definitions) for a base prompt:
        computed once per prompt text and format (a prompt with thread variables has a
        few texts)."""
        key = (form.name, self.counter.name, base)
        hit = self._fixed.get(key)
        if hit is None:
            system = form.system(base, self.tools)
            if self.redactor is not None:
                system = self.redactor.redact(system)
            tools_text = self.tools_text(form)
            hit = (
                system,
                self.count_text(system) + 4,
                self.count_text(tools_text) if tools_text else 0,
            )
            if len(self._fixed) >= 64:
                self._fixed.clear()
            self._fixed[key] = hit
        return hit

    def tools_text(self, form: ContextFormat) -> str:
        """The text the tool definitions cost in `form`: the bound model's own rendering of
        native definitions when it declares one (`ModelProfile.tools_text`: a backend
        without a native tool API writes them as signatures), else the format's."""
        if form.native_tools and self._tools_text is not None and self.tools:
            return self._tools_text(self.tools)
        return form.tools_text(self.tools)

    def _form(self, fmt: str | ContextFormat | None) -> ContextFormat:
        if fmt is None:
            return self.format
        if isinstance(fmt, str):
            return format_named(fmt, self.settings.native_tools_for(self._bound))
        return fmt

    def count_text(self, text: str) -> int:
        key = (self.counter.name, text)
        cached = self._texts.get(key, text)
        if cached is None:
            cached = self.counter.count(text)
            self._texts.put(key, text, cached)
        return int(cached)

    def fit_summary(self, text: str, max_tokens: int, seq: int) -> str:
        """`text` cut to fit the summary room, redacted."""
        if self.count_text(text) + 12 > max_tokens:
            text = truncate_to(text, max_tokens - 24, self.counter, seq)
        return self.redactor.redact(text) if self.redactor is not None else text

    def base_prompt(self, thread: Thread) -> tuple[str, str | None, str | None, str]:
        """(text, name, version, hash) of the system prompt before tool definitions."""
        if self.prompt is None:
            return self.instructions, self.name, None, self._instructions_hash
        variables: dict[str, Any] = {
            "agent": self.name,
            "tools": [{"name": t.name, "description": t.description} for t in self.tools],
            "thread": {"id": thread.id, "metadata": thread.metadata},
        }
        variables.update(self.settings.prompt_vars)
        dynamic = thread.metadata.get("prompt_vars")
        if isinstance(dynamic, Mapping):
            variables.update(dynamic)
        text = self.prompt.render(variables)
        return text, self.prompt.name, self.prompt.version, self.prompt.sha256


class _Pass:
    """One rendering of one thread: the fixed parts, then plan and assemble (the plan is
    retried with a wider margin in the rare case the exact count overshoots it).

    A plain class with slots, each field set once: one is built per model call."""

    __slots__ = (
        "fixed",
        "form",
        "limit",
        "prompt",
        "r",
        "retrieved",
        "scope",
        "seen",
        "sys_tokens",
        "system",
        "thread",
        "tools_tokens",
    )

    def __init__(self, r: Renderer, thread: Thread, form: ContextFormat) -> None:
        self.r = r
        self.thread = thread
        self.form = form
        self.scope = (thread.id, form.name, r.counter.name)  # what keys its cached blocks
        base, name, version, digest = r.base_prompt(thread)
        self.prompt: tuple[str | None, str | None, str] = (name, version, digest)
        self.system, self.sys_tokens, self.tools_tokens = r.fixed_parts(base, form)
        self.fixed = self.sys_tokens + (self.tools_tokens if form.native_tools else 0) + 3
        retrieval = r.settings.retrieval
        self.retrieved = retrieved_indexes(thread, retrieval.tool if retrieval else None)
        self.limit = r.budget.window - r.budget.max_output_tokens
        self.seen: dict[tuple[int, bool, int], tuple[Any, int]] = {}

    def payload(
        self, i: int, reduced: bool, budget: ContextBudget, limit: int | None = None
    ) -> tuple[Any, int]:
        r, events = self.r, self.thread.events
        e = events[i]
        reduced = reduced and type(e) is ToolResult
        cut = (limit or budget.max_result_tokens) if reduced else budget.max_result_tokens
        # A pass asks for the same block several times (each planning level, assembly,
        # the tail it seeds); its events do not change meanwhile, so neither does the
        # block: the first answer is kept for the pass.
        seen = self.seen.get((i, reduced, cut))
        if seen is not None:
            return seen
        tid, form, counter = self.scope
        key = (tid, e.seq, form, reduced, counter, _neighbour_key(events, i), cut)
        hit = r._blocks.get(key, e)
        if hit is None:
            block = self.form.block(events, i, reduced, cut, r.counter)
            if block is not None and r.redactor is not None:
                block = _redact_payload(r.redactor, block)
            hit = (block, self.form.tokens(block, r.counter) if block is not None else 0)
            r._blocks.put(key, e, hit)
        self.seen[(i, reduced, cut)] = hit
        return hit

    def _stored_summary(self, i: int) -> Any:
        c = self.thread.events[i]
        if not isinstance(c, Compacted):  # the planner only passes compacted events here
            raise TypeError(f"event {i} is not a compacted event")
        return self.form.summary(c.from_seq, c.to_seq, c.summary)

    def share(self, budget: ContextBudget) -> ContextBudget:
        """The budget with this call's retrieval share (moved under a `dynamic` split)."""
        retrieval = self.r.settings.retrieval
        if retrieval is None or retrieval.split != "dynamic" or not self.retrieved:
            return budget
        share = dynamic_share(
            budget.retrieved_share,
            self.thread.state.model_calls,
            best_relevance(self.thread, self.retrieved),
        )
        return replace(budget, retrieved_share=share)

    def retrieved_payload(self, i: int, layout: Layout, budget: ContextBudget) -> tuple[Any, int]:
        """A retrieved event's block, cut to the layout's per-result limit when it has one
        (cut shorter if the rough cut came out over it, so the share always holds)."""
        limit = layout.retrieved_limit
        block, n = self.payload(i, layout.retrieved_reduced, budget, limit)
        if limit is None or not isinstance(self.thread.events[i], ToolResult):
            return block, n
        cut = limit
        while n > limit and cut > 16:
            cut = max(16, cut - (n - limit) - 8)
            block, n = self.payload(i, True, budget, cut)
        return block, n

    def plan(self, budget: ContextBudget) -> Layout:
        counter = self.r.counter
        budget = self.share(budget)
        return plan_layout(
            self.thread.events,
            budget=budget,
            fixed=self.fixed,
            tokens=lambda i, red: int(self.payload(i, red, budget)[1]),
            summary_tokens=lambda i: self.form.tokens(self._stored_summary(i), counter),
            virtual_summary_tokens=budget.summary_tokens,
            retrieved=self.retrieved,
        )

    def digest(self, layout: Layout, budget: ContextBudget) -> str:
        """The deterministic summary of the span `layout` compacts (incremental per thread)."""
        if layout.compact is None:
            raise TypeError("the layout compacts nothing")
        hi = layout.compact[1]
        fold = self.r._digests.fold(self.thread, hi, frozenset(self.retrieved))
        return self.r.fit_summary(fold.text(0), budget.summary_tokens, hi)

    async def summarise(self, layout: Layout, budget: ContextBudget) -> str:
        """The summary of the span `layout` compacts, by the settings' summariser."""
        summariser = self.r.settings.summariser
        if summariser is None or layout.compact is None:
            return self.digest(layout, budget)
        lo, hi = layout.compact
        previous = previous_summary(self.thread, hi)
        start = previous[1] + 1 if previous else lo
        span = [e for e in self.thread.events[start : hi + 1] if not isinstance(e, Compacted)]
        result: Any = summariser(span, previous[0] if previous else None)
        if inspect.isawaitable(result):
            result = await result
        return self.r.fit_summary(str(result), budget.summary_tokens, hi)

    def assemble(
        self, layout: Layout, budget: ContextBudget, summary: str | None
    ) -> tuple[Rendered | None, int]:
        """(the rendering of `layout`, its exact token count); the rendering is None when
        that count is over the limit."""
        form, counter, events = self.form, self.r.counter, self.thread.events
        compaction = None
        if layout.compact is not None and summary is not None:
            compaction = (layout.compact[0], layout.compact[1], summary)
        native = form.native_tools
        sections: dict[str, int] = {
            "system": self.sys_tokens - (0 if native else self.tools_tokens),
            "tools": self.tools_tokens,
            "retrieved": 0,
            "summary": 0,
        }
        payloads: list[Any] = []
        # Blocks of events before the latest model call were in it: the fallback read mark
        # (`prompt_cache`); none when compacting anew, nor at level 1 (`incremental._prefix`).
        latest = latest_model_call(events)
        cut = layout.compact is not None or layout.level != 0
        boundary = -1 if cut or latest is None else latest
        stable: int | None = None if boundary >= 0 else 0
        settled, final = 0, not layout.retrieved  # leading blocks no appended event changes
        sure = surely_final(events, layout.units, layout.level) if layout.compact is None else -1
        for i in layout.retrieved:
            block, n = self.retrieved_payload(i, layout, budget)
            if block is not None:
                if stable is None and i >= boundary:
                    stable = len(payloads)
                payloads.append(block)
                sections["retrieved"] += n
        for kind, i, reduced in layout.units:
            if kind == "summary":
                if i == -1 and compaction is not None:
                    block = form.summary(*compaction)
                else:
                    block = self._stored_summary(i)
                payloads.append(block)
                settled += final
                sections["summary"] += form.tokens(block, counter)
                continue
            final = final and (i < sure or final_unit(events, (kind, i, reduced), layout.level))
            block, n = self.payload(i, reduced, budget)
            if block is None:
                continue
            if stable is None and i >= boundary:
                stable = len(payloads)
            payloads.append(block)
            settled += final
            key = f"history:{events[i].kind}"
            sections[key] = sections.get(key, 0) + n
        messages = form.assemble(payloads)
        # The planner adds up cached per-block counts; the request is counted whole, once,
        # so `input_tokens` is exact. Should boundary effects ever push it over the limit,
        # the caller plans again with a wider margin rather than send it.
        exact = self.fixed + message_tokens(messages, counter)
        if exact > self.limit:
            return None, exact
        fallback = len(payloads) if stable is None else stable
        marks = body_marks(messages, payloads, fallback, settled, latest)
        context = self.context(messages, budget, exact, marks)
        return Rendered(context, layout, sections, compaction), exact

    def context(
        self, messages: tuple[Message, ...], budget: ContextBudget, exact: int, marks: Marks
    ) -> Context:
        """The context of a finished plan (the full and the incremental path share it)."""
        native = self.form.native_tools
        name, version, digest = self.prompt
        cached, settled = self.r._sent.mark(self.thread, messages, marks)
        fields = {
            "system": self.system,
            "messages": messages,
            "tools": self.r.tools if native else (),
            "output_schema": self.r.output_schema,
            "tools_in_prompt": not native and bool(self.r.tools),
            "max_output_tokens": budget.max_output_tokens,
            "prompt_name": name,
            "prompt_version": version,
            "prompt_hash": digest,
            "input_tokens": exact,
            "cached_prefix": cached,
            "settled_prefix": settled,
            "model_calls": self.thread.state.model_calls,
        }
        return Context.of(fields)  # once a call: not the frozen dataclass's constructor
