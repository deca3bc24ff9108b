"""The HTTP server (`threadline[server]`): API, background runner, webhooks, web page.

from threadline.server import ServerConfig, create_app
app = create_app(runtime, ServerConfig(auth=True, webhook_secret=...))
"""

from __future__ import annotations

from .app import Lifecycle, ServerConfig, create_app

__all__ = ["Lifecycle", "ServerConfig", "create_app"]
