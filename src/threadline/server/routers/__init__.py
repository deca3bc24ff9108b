"""The server's routers, one per concern; `create_app` lists them in order."""

from __future__ import annotations

from . import channels, events, health, humans, threads, ui, webhooks

__all__ = ["channels", "events", "health", "humans", "threads", "ui", "webhooks"]
