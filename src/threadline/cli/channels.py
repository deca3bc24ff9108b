"""`threadline channels`: the channels configured here, and the email receiver on its own.

    threadline channels list                 what THREADLINE_CHANNELS turns on
    threadline channels email -a app.py:bot  run the SMTP receiver (and the outbox sweep)
                                             without the HTTP server; workers advance

`threadline serve` runs the channels itself; this command is for a receiver that lives on
another machine than the API (an MX host), sharing the store.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
from rich.table import Table

from ..bootstrap import chosen_agents, default_agent_refs, load_agents, open_runtime
from ..errors import ConfigError
from .common import LockedOpt, app, command, console, err_console, run_async, settings

__all__: list[str] = []

channels_app = typer.Typer(
    help="Slack and email channels (docs/channels.md).", no_args_is_help=True
)
app.add_typer(channels_app, name="channels")


@command(channels_app, "list")
def channels_list() -> None:
    """The channels THREADLINE_CHANNELS turns on, each checked against its settings."""
    from ..channels import CHANNELS, open_channels

    cfg = settings()
    names = {n.strip().lower() for n in cfg.channels.split(",") if n.strip()}
    refs = default_agent_refs()
    agents = [a.name for a, _ in load_agents(refs).values()] if refs else []
    table = Table("channel", "state", "inbound")
    for name in sorted(CHANNELS | dict.fromkeys(names, "")):
        state = "off"
        if name in names:
            try:
                open_channels(name, agents=agents)
                state = "on"
            except ConfigError as exc:
                state = f"error: {exc}"
        inbound = f"/v1/channels/{name}" if name == "slack" else "SMTP (THREADLINE_EMAIL_LISTEN)"
        table.add_row(name, state, inbound)
    console.print(table)


@command(channels_app, "email")
def channels_email(
    agent: Annotated[
        list[str] | None,
        typer.Option("--agent", "-a", help="Agent reference path.py:name (repeatable)."),
    ] = None,
    locked: LockedOpt = False,
) -> None:
    """Run the email receiver (THREADLINE_EMAIL_LISTEN) until SIGTERM/SIGINT."""
    from ..channels import Dispatcher, Hub, open_channels
    from ..channels.email import EmailChannel

    agents = chosen_agents(agent)
    cfg = settings(locked)
    channels = open_channels("email", agents=list(agents))
    email = channels["email"]
    if not isinstance(email, EmailChannel) or email.listen is None:
        raise ConfigError("set THREADLINE_EMAIL_LISTEN=host:port for the receiver to listen on")
    dispatcher = Dispatcher(channels)
    runtime = open_runtime(cfg, agents, observers=[dispatcher], with_model=False)
    dispatcher.bind(runtime)

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await email.start(Hub(runtime, retention=cfg.delivery_retention))
        err_console.print(f"threadline email receiver listening on {email.listen}")
        try:
            await dispatcher.serve(interval=1.0, stopping=stop.is_set)
        finally:
            await email.stop()
            await dispatcher.aclose()
            await runtime.store.close()

    run_async(go())
