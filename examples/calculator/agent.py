"""A calculator agent: four tools, and division needs a human's approval."""

from pathlib import Path

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
    prompt=Path(__file__).with_name("prompt.md.j2"),  # versioned template (docs/prompts.md)
)
