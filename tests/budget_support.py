"""What the budget tests share: a priced runaway model and the figures of a thread."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from threadline import Thread, tool
from threadline.events import BudgetReserved, BudgetSettled
from threadline.models.base import Context, ModelOutput, ModelProfile
from threadline.models.pricing import Price
from threadline.testing import FunctionModel, intent

PRICE = Price(2.0, 8.0)
"""USD per million tokens of the test models."""
OUT = 40
"""Output tokens each test model answer reports."""


@tool
def lookup(n: int) -> str:
    """Look up record n."""
    return f"record {n}"


def runaway(
    model_id: str = "priced",
    *,
    price: Price | None = PRICE,
    on_answer: Callable[[], None] | None = None,
    before: Callable[[], Awaitable[None]] | None = None,
) -> FunctionModel:
    """A model that always asks for another lookup (never the same one twice, so the loop
    guard never stops it), reporting real usage: the rendered input and `OUT` tokens.
    `before` is awaited before each answer (a test holding calls until a condition)."""

    async def answer(context: Context) -> ModelOutput:
        if before is not None:
            await before()
        if on_answer is not None:
            on_answer()
        text = json.dumps(intent("lookup", n=context.model_calls))
        return ModelOutput(
            text=text, model=model_id, input_tokens=context.input_tokens or 0, output_tokens=OUT
        )

    profile = ModelProfile(max_output_tokens=256, price=price)
    return FunctionModel(answer, model_id=model_id, profile=profile)


def spend(thread: Thread) -> tuple[int, int, float]:
    """What a thread's settled events say it used."""
    settled = [e for e in thread.events if isinstance(e, BudgetSettled)]
    return (
        sum(e.calls for e in settled),
        sum(e.tokens for e in settled),
        sum(e.usd for e in settled),
    )


def biggest_reservation(thread: Thread) -> BudgetReserved:
    return max((e for e in thread.events if isinstance(e, BudgetReserved)), key=lambda e: e.usd)


def left_open(thread: Thread, usd: float, **tree: Any) -> BudgetReserved:
    """The reservation a process that died during its model call leaves (no answer)."""
    return BudgetReserved(
        seq=thread.next_seq,
        at=thread.events[-1].at,
        model="priced",
        input_tokens=500,
        output_tokens=256,
        usd=usd,
        **tree,
    )
