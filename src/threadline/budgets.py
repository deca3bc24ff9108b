"""Budgets: what a thread's model calls, and a whole tree's, may use (issue 13, factor 10).

A `Budget` limits model calls, tokens and USD. An agent has one per thread
(`Agent.budget`) and one per tree (`Agent.tree_budget`: the root thread and every
sub-agent thread under it); a launch may replace either (`Runtime.launch(budget=...)`,
`--budget-usd`, ...), kept in the thread's metadata so every worker reads the same.

Before each model call of a thread under a budget, `reserve` writes `budget_reserved`:
the rendered input's tokens plus the output cap, priced by the model's profile. The call
is made only once that is committed, so no call can start that would pass a limit: a
budget is passed by at most the difference between one call's reservation and its real
use (none, when the backend counts as the renderer does). The answer's append starts with
`budget_settled` (`settle`), replacing the reservation with what the call used. An answer
that is not written (the thread ended meanwhile, or a commit ahead of it was refused) is
settled alone to what the call used, known to this process (`Unsettled`): at once, or
before the next reservation. A reservation a crash left open (what it used is unknown) is
settled in full before the next one.

Per thread, the figures are folded from the thread's own events (`ThreadState.spent_*`):
one advancer holds a thread, so checking them here is exact. Per tree, many workers may
advance the tree's threads at once: the store keeps the tree's totals and applies every
budget event that names a `tree` in the same transaction as the append writing it,
refusing a reservation that would pass the tree's limit (`TreeBudgetExhausted`, nothing
written). Totals and events can therefore never disagree, survive any restart, and replay
re-derives every figure from the events without calling anything.

Exhausting a budget escalates the thread with the figures (used, reserved, next call,
limit, per kind) in the escalation's details (`details["source"] == "budget"`). For a tree
budget, the child's outcome delivered to its parent carries the escalation up with it
(`tree_ran_out`), parent after parent, so the root stops too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from .context.tokens import counter_for_model
from .errors import (
    AppendConflict,
    CircuitOpen,
    ConfigError,
    InvalidAction,
    ModelError,
    TreeBudgetExhausted,
)
from .events import (
    BUDGET_SOURCE,
    Budget,
    BudgetRaised,
    BudgetReserved,
    BudgetSettled,
    Escalated,
    Event,
    Status,
    Thread,
)
from .models.base import Context, Model, ModelOutput
from .stores.base import Lease, Store

if TYPE_CHECKING:
    from .agent import Agent

__all__ = [
    "BUDGET_KEY",
    "TREE_BUDGET_KEY",
    "Budget",
    "Held",
    "Host",
    "Limits",
    "Unsettled",
    "check_prices",
    "child_metadata",
    "launch_metadata",
    "limits",
    "own_budget",
    "raised",
    "reserve",
    "tree_ran_out",
]

BUDGET_KEY = "budget"
"""Thread metadata: a launch's own per-thread budget (replaces `Agent.budget`)."""
TREE_BUDGET_KEY = "tree_budget"
"""Thread metadata: the tree's budget (a launch's, or the root agent's, copied to every
sub-agent thread of the tree when it starts)."""

KINDS = ("model_calls", "tokens", "usd")


class Host(Protocol):
    """What reserving needs of the runtime that calls it (`Runtime` is one); declared here
    so that budgets sit below the runtime."""

    store: Store
    clock: Callable[[], datetime]
    unsettled: Unsettled

    async def append_events(
        self, thread: Thread, events: Sequence[Event], lease: Lease | None
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """The budgets a thread runs under: its own, and its tree's (kept by the store under
    the id of the tree's root thread)."""

    thread: Budget | None
    tree: Budget | None
    root: str

    @property
    def needs_price(self) -> bool:
        return any(b is not None and b.max_usd is not None for b in (self.thread, self.tree))


def _budget(value: object, where: str) -> Budget | None:
    if value is None:
        return None
    try:
        budget = Budget.model_validate(value)
    except ValidationError as exc:
        raise ConfigError(f"{where} is not a budget: {exc.errors()[0]['msg']}") from None
    return None if budget.empty else budget


def limits(agent: Agent, thread: Thread) -> Limits | None:
    """The budgets of `thread` (None: it runs under none).

    Raises:
        ConfigError: the thread's metadata holds a budget that does not validate.
    """
    meta = thread.metadata
    own = _budget(meta[BUDGET_KEY], "the thread's budget") if BUDGET_KEY in meta else None
    own = thread.state.budget or own or agent.budget
    ancestors = meta.get("ancestors")
    if isinstance(ancestors, list) and ancestors and isinstance(ancestors[0], dict):
        root, tree = str(ancestors[0].get("thread", thread.id)), None  # the root's, copied
    else:
        root, tree = thread.id, agent.tree_budget
    if TREE_BUDGET_KEY in meta:
        tree = _budget(meta[TREE_BUDGET_KEY], "the tree's budget")
    if own is None and tree is None:
        return None
    return Limits(own, tree, root)


def launch_metadata(
    agent: Agent,
    model: Model | None,
    budget: Budget | None,
    tree_budget: Budget | None,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """The metadata a launch records for its budgets: `budget` / `tree_budget` when given,
    else those `metadata` already holds (a sub-agent's tree budget), checked.

    Raises:
        ConfigError: a budget in `metadata` that does not validate, or a USD budget over a
            model without a price (`check_prices`).
    """
    budget = budget or _budget(metadata.get(BUDGET_KEY), "the metadata's budget")
    tree_budget = tree_budget or _budget(
        metadata.get(TREE_BUDGET_KEY), "the metadata's tree budget"
    )
    check_prices(agent, model, budget, tree_budget)
    meta: dict[str, Any] = {}
    if budget is not None:
        meta[BUDGET_KEY] = budget.model_dump(exclude_none=True)
    if tree_budget is not None:
        meta[TREE_BUDGET_KEY] = tree_budget.model_dump(exclude_none=True)
    return meta


def raised(
    agent: Agent, thread: Thread, new: Budget, by: str | None, seq: int, at: datetime
) -> BudgetRaised:
    """The `budget_raised` that gives `thread` (of `agent`) the limits `new` sets, the
    other kinds kept as they are. Raising lets a thread its own budget stopped run on.

    Raises:
        InvalidAction: nothing in `new`, or nothing higher; the thread ended (done, failed)
            or escalated for another reason than its own budget (a tree's budget is kept by
            the store: not raised here); it has no budget of its own, or no limit of a kind
            `new` sets; a new limit below the current one, or below what the thread used
            and holds reserved. Nothing is written.
        ConfigError: the thread's recorded budget does not validate.
    """
    name, state = f"thread {thread.id}", thread.state
    if new.empty:
        raise InvalidAction("give at least one new limit (model calls, tokens or USD)")
    if state.terminal in (Status.DONE, Status.FAILED):
        raise InvalidAction(f"{name} is {state.terminal.value}; its budget can no longer matter")
    last = next((e for e in reversed(thread.events) if isinstance(e, Escalated)), None)
    if state.terminal == Status.ESCALATED and last is not None and not own_budget(last):
        raise InvalidAction(
            f"{name} is escalated, not by its own budget ({last.reason}); "
            "raising that would not let it run on"
        )
    found = limits(agent, thread)
    current = found.thread if found is not None else None
    if current is None:
        raise InvalidAction(f"{name} runs under no budget of its own; there is none to raise")
    open_call = state.reserved_tokens is not None
    held = (int(open_call), state.reserved_tokens or 0, state.reserved_usd or 0.0)
    used = (state.spent_calls, state.spent_tokens, state.spent_usd)
    now = (current.max_model_calls, current.max_tokens, current.max_usd)
    wanted = (new.max_model_calls, new.max_tokens, new.max_usd)
    for kind, limit, want, spent, reserved in zip(KINDS, now, wanted, used, held, strict=True):
        if want is None:
            continue
        if limit is None:
            raise InvalidAction(f"{name} has no {kind} limit to raise")
        if want < spent + reserved:
            holds = f" and holds {_num(reserved)} reserved" if reserved else ""
            raise InvalidAction(
                f"{name} has used {_num(spent)} {kind}{holds}; a limit of {_num(want)} is "
                "below that"
            )
        if want < limit:
            raise InvalidAction(f"{name}'s {kind} limit is {_num(limit)}; {_num(want)} is lower")
    if all(w is None or w == n for w, n in zip(wanted, now, strict=True)):
        raise InvalidAction(f"{name}'s budget already has those limits; nothing is raised")
    merged = current.model_copy(update=new.model_dump(exclude_none=True))
    return BudgetRaised(seq=seq, at=at, budget=merged, by=by)


def own_budget(escalated: Escalated) -> bool:
    """Whether `escalated` is the thread's own budget running out (not its tree's)."""
    details = escalated.details
    return details.get("source") == BUDGET_SOURCE and details.get("scope") == "thread"


def child_metadata(parent_agent: Agent, parent: Thread) -> dict[str, Any]:
    """What a sub-agent thread inherits: the tree's budget (its root's), if any."""
    found = limits(parent_agent, parent)
    if found is None or found.tree is None:
        return {}
    return {TREE_BUDGET_KEY: found.tree.model_dump(exclude_none=True)}


def check_prices(
    agent: Agent,
    model: Model | None,
    budget: Budget | None = None,
    tree_budget: Budget | None = None,
) -> None:
    """A USD budget needs the price of every model it pays for: the agent's, and under a
    tree budget every sub-agent's below it. `budget` / `tree_budget`: a launch's, replacing
    the agent's. Checked when a runtime takes an agent and at each launch (at start, not in
    the middle of a run); `reserve` escalates should a model without a price still come.

    Raises:
        ConfigError: naming the agent and the model without a price.
    """
    own = budget if budget is not None else agent.budget
    tree = tree_budget if tree_budget is not None else agent.tree_budget
    if _usd(own) or _usd(tree):
        _require_price(agent, model)
    if _usd(tree):
        seen: list[Agent] = [agent]
        todo = agent.sub_agents()
        while todo:
            sub = todo.pop()
            if any(sub is s for s in seen):
                continue
            seen.append(sub)
            _require_price(sub, model)
            todo.extend(sub.sub_agents())


def _usd(budget: Budget | None) -> bool:
    return budget is not None and budget.max_usd is not None


def _require_price(agent: Agent, model: Model | None) -> None:
    chosen = agent.model or model
    if chosen is not None and chosen.profile.price is None:
        raise ConfigError(_no_price(agent.name, chosen))


def _no_price(agent: str, model: Model) -> str:
    return (
        f"agent {agent}: a USD budget needs the price of model {model.model_id}; add it "
        "(PriceTable.extend, THREADLINE_PRICES, or ModelProfile(price=...))"
    )


# -- reserving and settling --------------------------------------------------------------


_Used = tuple[int, int, float]
"""(calls, tokens, usd) a model call used."""


class Unsettled:
    """What this process knows its latest model call of each thread used (`Held.settle`),
    kept until the thread's next reservation: one whose answer was dropped before it was
    written is settled to that (`reserve`), not in full as after a crash. Bounded: only
    the newest `keep` threads' are kept (a dropped answer is followed at once by the next
    reservation, or settled where it was dropped: `Held.settle_dropped`)."""

    def __init__(self, keep: int = 1024) -> None:
        self.keep = keep
        self._known: dict[str, tuple[int, _Used]] = {}

    def note(self, thread_id: str, reserved_seq: int, used: _Used) -> None:
        self._known.pop(thread_id, None)  # re-inserted last: the newest
        self._known[thread_id] = (reserved_seq, used)
        if len(self._known) > self.keep:
            del self._known[next(iter(self._known))]

    def take(self, thread_id: str, reserved_seq: int) -> _Used | None:
        """What the call reserved at `reserved_seq` used, if this process knows it."""
        known = self._known.pop(thread_id, None)
        return known[1] if known is not None and known[0] == reserved_seq else None


@dataclass(slots=True)
class Held:
    """What `reserve` came to: `go` False when the call must not be made now (the thread
    escalated, or someone acted meanwhile: decide again); `reserved` is the reservation
    the call's answer settles (None: the thread runs under no budget)."""

    thread: Thread
    go: bool = True
    reserved: BudgetReserved | None = None
    model: Model | None = field(default=None, repr=False)
    unsettled: Unsettled | None = field(default=None, repr=False)
    used: _Used | None = None
    """What the call used, once `settle` knows (its answer arrived, or failed)."""

    def settle(
        self,
        answer: Callable[[int, datetime], list[Event]],
        out: ModelOutput | None,
        error: ModelError | None,
    ) -> Callable[[int, datetime], list[Event]]:
        """`answer` with the reservation's `budget_settled` first (the same append)."""
        reserved = self.reserved
        if reserved is None:
            return answer
        used = self.used = _used(reserved, self.model, out, error)
        if self.unsettled is not None:
            self.unsettled.note(self.thread.id, reserved.seq, used)

        def build(seq: int, at: datetime) -> list[Event]:
            return [_settled(reserved, used, seq, at), *answer(seq + 1, at)]

        return build

    def dropped(self, thread: Thread) -> bool:
        """Whether `thread` (as the answer's append left it) still holds this call's
        reservation open: the answer, with its settlement, was not written."""
        if self.reserved is None or self.used is None or thread.state.reserved_tokens is None:
            return False
        return _open(thread).seq == self.reserved.seq

    async def settle_dropped(self, runtime: Host, thread: Thread, lease: Lease | None) -> Thread:
        """Settle this call's reservation alone, to what the call used, while it is open (a
        conflict reloads and checks again; another advancer's step raises it, as any
        append does). The thread ended meanwhile, so no later reservation may come to."""
        reserved, used = self.reserved, self.used
        for _ in range(5):
            if reserved is None or used is None or not self.dropped(thread):
                return thread
            settled = _settled(reserved, used, thread.next_seq, runtime.clock())
            try:
                await runtime.append_events(thread, [settled], lease)
            except AppendConflict:
                thread = await runtime.store.load(thread.id)
                continue
            if runtime.unsettled is self.unsettled:
                runtime.unsettled.take(thread.id, reserved.seq)
            return thread
        return thread


def _used(
    reserved: BudgetReserved, model: Model | None, out: ModelOutput | None, error: ModelError | None
) -> _Used:
    """(calls, tokens, usd) a call used. A backend that reports no usage at all (test
    models) is taken at the reservation's input count; a cost it does not report is
    priced with the model's profile."""
    if isinstance(error, CircuitOpen):
        return 0, 0, 0.0  # nothing was sent
    if out is None:
        return 1, 0, 0.0  # the provider failed: a call, nothing billed
    tokens_in = out.input_tokens or reserved.input_tokens
    tokens_out = out.output_tokens
    usd = out.cost_usd
    if usd is None:
        price = model.profile.price if model is not None else None
        usd = price.cost(tokens_in, tokens_out) if price is not None else 0.0
    return 1, tokens_in + tokens_out, max(0.0, round(usd, 8))


async def reserve(
    runtime: Host,
    agent: Agent,
    thread: Thread,
    model: Model,
    context: Context,
    lease: Lease | None,
) -> Held:
    """Reserve the model call about to be made with `context`, committed before it is made.

    Nothing is written for a thread under no budget. A reservation that would pass the
    thread's budget, or (checked by the store, atomically) its tree's, escalates the
    thread instead, and the tree's root with it; so does a USD budget over a model that has
    no price. A reservation left open by a crash is settled in full first.
    """
    try:
        found = limits(agent, thread)
    except ConfigError as exc:
        return await _escalate(runtime, thread, lease, str(exc), {"source": BUDGET_SOURCE}, [])
    if found is None:
        return Held(thread)
    price = model.profile.price
    if price is None and found.needs_price:
        reason = _no_price(agent.name, model)
        return await _escalate(runtime, thread, lease, reason, {"source": BUDGET_SOURCE}, [])
    tokens_in = context.input_tokens
    if tokens_in is None:
        tokens_in = counter_for_model(model).count(context.as_text())
    cap = context.max_output_tokens
    usd = round(price.cost(tokens_in, cap), 8) if price is not None else 0.0
    tree = found.root if found.tree is not None else None
    seq, at = thread.next_seq, runtime.clock()
    before = _leftover(thread, seq, at, runtime.unsettled)
    reserved = BudgetReserved(
        seq=seq + len(before),
        at=at,
        model=model.model_id,
        input_tokens=tokens_in,
        output_tokens=cap,
        usd=usd,
        tree=tree,
        tree_budget=found.tree,
    )
    if found.thread is not None:
        over = thread_figures(thread, before, reserved, found.thread)
        if over is not None:
            details = {"source": BUDGET_SOURCE, "scope": "thread", **over}
            reason = _reason("thread", over)
            return await _escalate(runtime, thread, lease, reason, details, before)
    try:
        await runtime.append_events(thread, [*before, reserved], lease)
    except AppendConflict:
        return Held(await runtime.store.load(thread.id), go=False)
    except TreeBudgetExhausted as exc:
        over = tree_figures(exc, reserved, found.tree)
        details = {"source": BUDGET_SOURCE, "scope": "tree", "root": found.root, **over}
        details["thread"] = thread.id
        return await _escalate(runtime, thread, lease, _reason("tree", over), details, before)
    return Held(thread, reserved=reserved, model=model, unsettled=runtime.unsettled)


def _leftover(thread: Thread, seq: int, at: datetime, unsettled: Unsettled) -> list[Event]:
    """The settlement of a reservation left open, in the tree it was reserved in: to what
    the call used when this process knows it (its answer was dropped: `Unsettled`), else
    in full (a crash: the call may have been made and billed; nothing says it was not)."""
    if thread.state.reserved_tokens is None:
        return []
    opened = _open(thread)
    used = unsettled.take(thread.id, opened.seq) or (1, opened.tokens, opened.usd)
    return [_settled(opened, used, seq, at)]


def _open(thread: Thread) -> BudgetReserved:
    """The thread's latest reservation (the open one, when `reserved_tokens` is set)."""
    return next(e for e in reversed(thread.events) if isinstance(e, BudgetReserved))


def _settled(reserved: BudgetReserved, used: _Used, seq: int, at: datetime) -> BudgetSettled:
    """The `budget_settled` that closes `reserved`, in the tree it was reserved in, having
    used (calls, tokens, usd)."""
    calls, tokens, usd = used
    return BudgetSettled(
        seq=seq,
        at=at,
        calls=calls,
        tokens=tokens,
        usd=usd,
        reserved_tokens=reserved.tokens,
        reserved_usd=reserved.usd,
        tree=reserved.tree,
    )


def thread_figures(
    thread: Thread, before: list[Event], reserved: BudgetReserved, budget: Budget
) -> dict[str, Any] | None:
    """The figures of the thread's budget when `reserved` would pass it, else None."""
    state = thread.state
    calls, tokens, usd = state.spent_calls, state.spent_tokens, state.spent_usd
    for event in before:
        if isinstance(event, BudgetSettled):
            calls, tokens, usd = calls + event.calls, tokens + event.tokens, usd + event.usd
    return _figures((calls, tokens, usd), (0, 0, 0.0), reserved, budget)


def tree_figures(
    exc: TreeBudgetExhausted, reserved: BudgetReserved, budget: Budget | None
) -> dict[str, Any]:
    """The figures of the tree's budget the store refused `reserved` against."""
    found = _figures(exc.used, exc.reserved, reserved, budget or Budget(), force=True)
    return found or {}


def _figures(
    used: tuple[int, int, float],
    held: tuple[int, int, float],
    reserved: BudgetReserved,
    budget: Budget,
    *,
    force: bool = False,
) -> dict[str, Any] | None:
    """Per kind: used, reserved (by other calls), next (this call), limit; and the kinds
    the next call would pass. None when it passes none (unless `force`)."""
    nxt = (1, reserved.tokens, reserved.usd)
    caps = (budget.max_model_calls, budget.max_tokens, budget.max_usd)
    figures: dict[str, Any] = {}
    exceeded: list[str] = []
    for i, kind in enumerate(KINDS):
        figures[kind] = {"used": used[i], "reserved": held[i], "next": nxt[i], "limit": caps[i]}
        cap = caps[i]
        if cap is not None and used[i] + held[i] + nxt[i] > cap + 1e-12:
            exceeded.append(kind)
    if not exceeded and not force:
        return None
    return {"exceeded": exceeded, "figures": figures}


def _reason(scope: str, over: dict[str, Any]) -> str:
    figures = over["figures"]
    parts = []
    for kind in over["exceeded"] or KINDS:
        f = figures[kind]
        if f["limit"] is None:
            continue
        parts.append(
            f"{kind} {_num(f['used'])} used + {_num(f['reserved'])} reserved + "
            f"{_num(f['next'])} for the next call > {_num(f['limit'])} limit"
        )
    return f"the {scope}'s budget is exhausted" + (": " + "; ".join(parts) if parts else "")


def _num(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


async def _escalate(
    runtime: Host,
    thread: Thread,
    lease: Lease | None,
    reason: str,
    details: dict[str, Any],
    before: list[Event],
) -> Held:
    """Escalate `thread` (after settling what `before` settles); the call is not made."""
    seq, at = thread.next_seq + len(before), runtime.clock()
    escalated = Escalated(seq=seq, at=at, reason=reason, details=details)
    try:
        await runtime.append_events(thread, [*before, escalated], lease)
    except AppendConflict:
        return Held(await runtime.store.load(thread.id), go=False)
    return Held(thread, go=False)


def tree_ran_out(child: Thread, parent: Thread | None, seq: int, at: datetime) -> list[Event]:
    """The parent's escalation when its sub-agent `child` ended because the tree's budget
    ran out, written with the child's outcome by whoever delivers it (so no second writer
    touches a parent being advanced). Up the tree, each parent in turn: the root stops."""
    last = child.events[-1] if child.events else None
    if not isinstance(last, Escalated) or last.details.get("source") != BUDGET_SOURCE:
        return []
    if last.details.get("scope") != "tree" or (parent is not None and parent.status in _ENDED):
        return []
    where = last.details.get("thread", child.id)
    details = {**last.details, "thread": where}
    reason = f"the tree's budget ran out in {where}: {last.reason}"
    return [Escalated(seq=seq, at=at, reason=reason, details=details)]


_ENDED = (Status.DONE, Status.ESCALATED, Status.FAILED)
