"""The agent the many-hosts tests run in `threadline worker` processes on the test hosts.

The crash tests' shop tools (tests/crash/shop.py), each execution recorded in the side
table `executions` (the side-effect ledger) over the same network the worker uses:

    "order N"  lookup -> charge -> send_receipt -> done
    "hold N"   hold -> lookup -> charge -> send_receipt -> done

`hold` (idempotent) sleeps HOLD_SECONDS after recording itself: the test cuts the worker's
link while it sleeps there, so the worker's next write (the hold result, and the charge
after it) comes late, after another host took the thread over.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "crash"))

from shop import charge, hold, lookup, outline, send_receipt  # noqa: E402

from threadline import Agent  # noqa: E402
from threadline.models.base import Context  # noqa: E402
from threadline.testing import FunctionModel, intent  # noqa: E402

__all__ = ["agent"]


def next_intent(context: Context) -> object:
    text = context.as_text()
    if "user hold" in text and "hold_result" not in text:
        return intent("hold")
    if "lookup_result" not in text:
        return intent("lookup", order="o-1")
    if "charge_result" not in text:
        return intent("charge", order="o-1", amount=42)
    if "send_receipt_result" not in text:
        return intent("send_receipt", order="o-1")
    return intent("done_for_now", message="charged and receipted")


agent = Agent(
    "fleet",
    tools=[lookup, charge, send_receipt, hold],
    model=FunctionModel(next_intent),
    renderer=outline,
    max_steps=10,
)
