"""The agent of the outbox tests' worker processes: asks to deploy (an approval that
expires after 4 s, reminded 2 s before, then rejected) and answers once it hears back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from threadline import Agent, ApprovalExpiry, tool
from threadline.models.base import Context
from threadline.testing import FunctionModel, intent


@tool(approval="always", side_effects=True)
def deploy(environment: str) -> str:
    """Deploy.

    Args:
        environment: where
    """
    return f"deployed to {environment}"


def _answer(context: Context) -> Any:
    text = "\n".join(m.content for m in context.messages)
    if "nobody answered" in text:
        return intent("done_for_now", message="Not deployed: nobody approved in time.")
    return intent("deploy", environment="prod")


agent = Agent(
    "deployer",
    tools=[deploy],
    instructions="deploy",
    model=FunctionModel(_answer, model_id="deployer-script"),
    approval_expiry={
        "deploy": ApprovalExpiry(timedelta(seconds=4), reminders=(timedelta(seconds=2),))
    },
)
