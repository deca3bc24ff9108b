"""The HTTP server (`threadline[server]`): API, background runner, webhooks, web page.

from threadline.server import ServerConfig, Services, create_app

services = Services.build(
    ServerConfig(auth=True, webhook_secret=...),
    lambda observers: Runtime(store, agents=agents, observers=observers),
)
app = create_app(services)
"""

from __future__ import annotations

from .app import create_app
from .services import Lifecycle, ServerConfig, Services

__all__ = ["Lifecycle", "ServerConfig", "Services", "create_app"]
