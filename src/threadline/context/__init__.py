"""Owning the context window (factor 3): renderers, token counting, budgets, redaction."""

from .render import render_context

__all__ = ["render_context"]
