"""A calculator agent: four tools, and division needs a human's approval."""

from threadline import Agent, tool


@tool
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@tool
def subtract(a: float, b: float) -> float:
    """Subtract b from a."""
    return a - b


@tool
def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


@tool(approval="always")
def divide(a: float, b: float) -> float:
    """Divide a by b (a human approves every division)."""
    return a / b


agent = Agent(
    name="calculator",
    tools=[add, subtract, multiply, divide],
    instructions=(
        "You are a calculator. Use one tool per step to work out the user's arithmetic. "
        "When you have the final number, use done_for_now to tell the user the answer."
    ),
)
