"""`threadline triggers list`: the webhook triggers of a server's config file, or of a
running server.

    threadline triggers list --config serve.yaml   the file's `triggers:`, each checked as
                                                   `threadline serve --config` checks it
                                                   (its secret's variable set, its template)
    threadline triggers list --server URL          what a running server has configured

Triggers are configuration (docs/channels.md): they change by editing the file and
restarting the server, so there is no `add` or `remove` here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..client import Client
from ..errors import ConfigError, MissingExtraError
from ..wire import TriggerChannel
from .common import app, command, console, run_async, settings
from .core import ServerOpt
from .serve import load_serve_config

__all__: list[str] = []

triggers_app = typer.Typer(
    help="Webhook triggers (configured in the file of `threadline serve --config`).",
    no_args_is_help=True,
)
app.add_typer(triggers_app, name="triggers")


def _from_file(path: Path) -> list[TriggerChannel]:
    try:
        from ..server.triggers import parse_triggers, trigger_view
    except ImportError as exc:
        raise MissingExtraError("server", exc.name or "jinja2") from None
    items = load_serve_config(path).get("triggers", [])
    return [trigger_view(t) for t in parse_triggers(items)]


async def _from_server(url: str) -> list[TriggerChannel]:
    async with Client.from_settings(url, settings()) as client:
        return (await client.channels()).triggers


@command(triggers_app, "list")
def triggers_list(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="The YAML file of `threadline serve --config`."),
    ] = None,
    server: ServerOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """The webhook triggers of a config file (checked) or of a running server."""
    if (config is None) == (server is None):
        raise ConfigError("give --config FILE (of `threadline serve`) or --server URL")
    found = _from_file(config) if config is not None else run_async(_from_server(str(server)))
    if as_json:
        for t in found:
            console.print(json.dumps(t.model_dump()), highlight=False, soft_wrap=True)
        return
    table = Table("trigger", "agent", "signature", "events", "answers to", "path")
    for t in found:
        events = ", ".join(t.events) or "any"
        cells = (t.name, t.agent, t.signature, events, t.to or "-", t.path)
        table.add_row(*(escape(c) for c in cells))
    console.print(table)
