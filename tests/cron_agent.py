"""The agent the schedule tests' worker processes serve: answers at once, no tools."""

from __future__ import annotations

from threadline import Agent
from threadline.testing import FunctionModel, intent

agent = Agent(
    "reporter", model=FunctionModel(lambda _: intent("done_for_now", message="report sent"))
)
