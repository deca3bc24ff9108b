"""The totals of each budgeted tree of threads, kept beside the threads (`threadline.budgets`).

A tree's totals are a projection of its threads' budget events, like a thread's state is
of its events: every append holding a `budget_reserved` or `budget_settled` that names a
`tree` updates that tree's row *in the same transaction* (`apply_plan`, `MemoryLedger.applied`),
so totals and events never disagree, whatever crashes.

* A reservation adds to the tree's `reserved` figures only if used + reserved + the
  reservation stays within its `tree_budget`, checked by the conditional `UPDATE` itself:
  PostgreSQL re-checks the condition on the row version it locked, so workers reserving
  for sibling threads at the same moment cannot pass the limit together; SQLite has one
  writer. Refused: `TreeBudgetExhausted` with the totals, and the append writes nothing.
* A settlement moves its reservation from `reserved` to `used`, as what the call used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import TreeBudgetExhausted
from ..events import Budget, BudgetReserved, BudgetSettled, Event
from .dialect import Dialect, Plan, PlanRunner, Query, select_one

__all__ = ["LedgerEvent", "MemoryLedger", "SQLLedger", "TreeTotals", "apply_plan", "ledger_events"]

LedgerEvent = BudgetReserved | BudgetSettled

Figures = tuple[int, int, float]
"""(model calls, tokens, USD)."""


@dataclass(frozen=True, slots=True)
class TreeTotals:
    """A tree's totals: `used` by settled calls, `reserved` by calls not yet settled."""

    root: str
    used: Figures
    reserved: Figures


def ledger_events(events: Sequence[Event]) -> list[LedgerEvent]:
    """The events of an append that change a tree's totals (none for most appends)."""
    # The kind first: a failing isinstance of an event class is the costlier test.
    return [
        e
        for e in events
        if e.kind in _LEDGER_KINDS and isinstance(e, BudgetReserved | BudgetSettled) and e.tree
    ]


_LEDGER_KINDS = frozenset({"budget_reserved", "budget_settled"})


def _passes(totals: TreeTotals, event: BudgetReserved) -> bool:
    """Whether `event` would take the tree past its budget."""
    budget = event.tree_budget or Budget()
    wants = (1, event.tokens, event.usd)
    caps = (budget.max_model_calls, budget.max_tokens, budget.max_usd)
    return any(
        cap is not None and totals.used[i] + totals.reserved[i] + wants[i] > cap + _SLACK
        for i, cap in enumerate(caps)
    )


_SLACK = 1e-9
"""USD sums are floats: a reservation landing exactly on the limit is within it."""


class MemoryLedger:
    """Tree totals in a dict (`MemoryStore`; applied under the store's append lock)."""

    def __init__(self) -> None:
        self._trees: dict[str, TreeTotals] = {}

    def applied(self, events: Sequence[LedgerEvent]) -> dict[str, TreeTotals] | None:
        """The totals after an append's budget events, changing nothing (`commit` them
        once the append is written); None when the append holds none.

        Raises:
            TreeBudgetExhausted: a reservation would pass its tree's budget.
        """
        if not events:
            return None
        trees = dict(self._trees)
        for event in events:
            root = event.tree or ""
            totals = trees.get(root) or TreeTotals(root, (0, 0, 0.0), (0, 0, 0.0))
            if isinstance(event, BudgetReserved):
                if _passes(totals, event):
                    raise TreeBudgetExhausted(root, totals.used, totals.reserved)
                held = _add(totals.reserved, 1, event.tokens, event.usd)
                totals = TreeTotals(root, totals.used, held)
            else:
                used = _add(totals.used, event.calls, event.tokens, event.usd)
                held = _add(totals.reserved, -1, -event.reserved_tokens, -event.reserved_usd)
                totals = TreeTotals(root, used, held)
            trees[root] = totals
        return trees

    def commit(self, trees: dict[str, TreeTotals] | None) -> None:
        """Keep what `applied` computed (the append it belongs to was written)."""
        if trees is not None:
            self._trees = trees

    async def totals(self, root: str) -> TreeTotals | None:
        return self._trees.get(root)


def _add(figures: Figures, calls: int, tokens: int, usd: float) -> Figures:
    return figures[0] + calls, figures[1] + tokens, figures[2] + usd


def apply_plan(dialect: Dialect, events: Sequence[LedgerEvent]) -> Callable[[], Plan[None]]:
    """The statements applying an append's budget events, run inside its transaction."""

    def plan() -> Plan[None]:
        for event in events:
            root = event.tree or ""
            if isinstance(event, BudgetSettled):
                args = {
                    "root": root,
                    "calls": event.calls,
                    "tokens": event.tokens,
                    "usd": event.usd,
                    "held_tokens": event.reserved_tokens,
                    "held_usd": event.reserved_usd,
                }
                yield Query(dialect.sql(_SETTLE), args)
                continue
            yield Query(dialect.sql(_ENSURE), {"root": root})
            sql, args = _reserve(event)
            done = yield Query(dialect.sql(sql), args)
            if done.rowcount != 1:
                row = (yield Query(dialect.sql(_TOTALS), {"root": root})).rows[0]
                raise TreeBudgetExhausted(root, _used(row), _reserved(row))

    return plan


def _reserve(event: BudgetReserved) -> tuple[str, dict[str, object]]:
    """The conditional reservation: one check per limit the tree has."""
    budget = event.tree_budget or Budget()
    args: dict[str, object] = {"root": event.tree, "tokens": event.tokens, "usd": event.usd}
    checks = ""
    if budget.max_model_calls is not None:
        checks += " AND used_calls + reserved_calls + 1 <= :max_calls"
        args["max_calls"] = budget.max_model_calls
    if budget.max_tokens is not None:
        checks += " AND used_tokens + reserved_tokens + :tokens <= :max_tokens"
        args["max_tokens"] = budget.max_tokens
    if budget.max_usd is not None:
        checks += " AND used_usd + reserved_usd + :usd <= :max_usd"
        args["max_usd"] = budget.max_usd + _SLACK
    return _RESERVE + checks, args


class SQLLedger:
    """Tree totals in the `budget_trees` table of a SQL store."""

    def __init__(self, runner: PlanRunner) -> None:
        self._runner = runner

    async def totals(self, root: str) -> TreeTotals | None:
        """The totals of the tree rooted at `root` (None: it never reserved)."""
        return await select_one(
            self._runner,
            _TOTALS,
            {"root": root},
            lambda row: TreeTotals(root, _used(row), _reserved(row)),
        )


def _used(row: Sequence[Any]) -> Figures:
    return int(row[0]), int(row[1]), float(row[2])


def _reserved(row: Sequence[Any]) -> Figures:
    return int(row[3]), int(row[4]), float(row[5])


_ENSURE = "INSERT INTO budget_trees (root) VALUES (:root) ON CONFLICT (root) DO NOTHING"
_RESERVE = (
    "UPDATE budget_trees SET reserved_calls = reserved_calls + 1, "
    "reserved_tokens = reserved_tokens + :tokens, reserved_usd = reserved_usd + :usd "
    "WHERE root = :root"
)
_SETTLE = (
    "UPDATE budget_trees SET used_calls = used_calls + :calls, "
    "used_tokens = used_tokens + :tokens, used_usd = used_usd + :usd, "
    "reserved_calls = reserved_calls - 1, reserved_tokens = reserved_tokens - :held_tokens, "
    "reserved_usd = reserved_usd - :held_usd WHERE root = :root"
)
_TOTALS = (
    "SELECT used_calls, used_tokens, used_usd, reserved_calls, reserved_tokens, reserved_usd "
    "FROM budget_trees WHERE root = :root"
)
