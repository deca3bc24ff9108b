"""`threadline mcp`: serve the runtime to MCP clients (stdio, or streamable HTTP).

    threadline mcp --agent agent.py:agent                        # stdio (an MCP client starts it)
    threadline mcp --agent agent.py:agent --transport http --port 8765

Over HTTP the same API keys and scopes as `threadline serve` apply (`--no-auth` only on
loopback). See docs/integrations.md.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ..bootstrap import chosen_agents, open_runtime
from ..errors import ConfigError, MissingExtraError
from .common import LockedOpt, ServedAgentsOpt, app, command, err_console, run_async, settle
from .common import settings as read_settings

__all__: list[str] = []


@command(app, "mcp")
def mcp_command(
    agent: ServedAgentsOpt = None,
    transport: Annotated[
        str, typer.Option(help="stdio (an MCP client starts this process) or http.")
    ] = "stdio",
    host: Annotated[str, typer.Option(help="Interface to bind (http).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (http); the endpoint is /mcp.")] = 8765,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="No API keys (http; only allowed on loopback).")
    ] = False,
    locked: LockedOpt = False,
) -> None:
    """Serve threads to MCP clients: launch, read, list what waits, approve/reject, respond."""
    try:
        from ..integrations.mcp.server import build_server, http_app
    except ImportError as exc:
        raise MissingExtraError("mcp", exc.name or "mcp") from None
    from .serve import is_loopback

    if transport not in ("stdio", "http"):
        raise ConfigError(f"--transport must be stdio or http, not {transport!r}")
    if no_auth and not is_loopback(host):
        raise ConfigError(f"--no-auth is refused when binding to {host}; bind 127.0.0.1")
    cfg = read_settings(locked)
    if transport == "stdio" and cfg.log == "stdout":
        cfg = cfg.model_copy(update={"log": "stderr"})  # stdout carries the protocol
    agents = chosen_agents(agent)
    runtime = open_runtime(cfg, agents, with_model=any(a.model is None for a, _ in agents.values()))
    auth = transport == "http" and not no_auth
    server = build_server(runtime, auth=auth)

    if transport == "stdio":
        settle(cfg)  # ready: start-up's objects frozen (threadline.heap); stdout is the protocol

        async def serve_stdio() -> None:
            try:
                await server.run_stdio_async()
            finally:
                await runtime.store.close()

        run_async(serve_stdio())
        return
    import uvicorn

    asgi = http_app(server, runtime.store, auth=auth, host=host)
    heap = settle(cfg)  # ready: start-up's objects frozen (threadline.heap)
    names = ", ".join(sorted(runtime.agents))
    mode = "API keys required" if auth else "no auth"
    err_console.print(
        f"threadline mcp: http://{host}:{port}/mcp ({mode}; agents: {names}; {heap})",
        highlight=False,
    )
    uvicorn.run(asgi, host=host, port=port, log_level="warning")
