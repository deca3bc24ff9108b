"""The agent the rate-limit fleet tests' worker processes serve (one lookup, then done),
and `busiest`, the check the rate-limit tests apply to the times calls arrived.

Its model and its tool append the time of every call they receive (and the process id)
to the file named by `RATE_TEST_LOG`: the model provider's and the tool's own record of
when calls reached them, which the tests check against the limits. The model also takes a
little while to answer, as a provider does.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Sequence
from typing import Any

from threadline import Agent, tool
from threadline.models.base import Context
from threadline.testing import FunctionModel, intent


def _record(what: str) -> None:
    path = os.environ.get("RATE_TEST_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:  # one short O_APPEND write per call
            log.write(f"{time.time():.6f} {what} {os.getpid()}\n")


async def _answer(context: Context) -> dict[str, Any]:
    _record("model")
    await asyncio.sleep(random.uniform(0.02, 0.25))
    if context.model_calls == 0:
        return intent("lookup", order="A-1001")
    return intent("done_for_now", message="A-1001 has shipped")


@tool
def lookup(order: str) -> dict[str, str]:
    """Look up an order's status.

    Args:
        order: the order id.
    """
    _record("tool")
    return {"order": order, "status": "shipped"}


agent = Agent("paced", tools=[lookup], model=FunctionModel(_answer, model_id="recorder:v1"))


def busiest(times: Sequence[float], per: float) -> int:
    """The most calls in any window of `per` seconds (ending at a call: the busiest does)."""
    ordered, start, best = sorted(times), 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - per:
            start += 1
        best = max(best, end - start + 1)
    return best
