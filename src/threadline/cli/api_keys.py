"""`threadline keys`: create, list and revoke the API keys of `threadline serve` (and of
`threadline mcp` over HTTP). A key's secret is printed once; the store keeps its digest."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from ..errors import ConfigError
from ..events import utcnow
from ..stores import key_store, open_store
from .common import command, console, err_console, run_async, settings

__all__ = ["keys_app"]

keys_app = typer.Typer(help="Create, list and revoke the server's API keys.", no_args_is_help=True)
"""Added to the CLI as `threadline keys` by `cli/serve.py`, beside the server it is for."""


@command(keys_app, "create")
def keys_create(
    name: Annotated[
        str,
        typer.Option(
            "--name", "-n", help="Who holds the key (recorded as `by` on their approvals)."
        ),
    ],
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope", "-s", help="launch, respond, read or admin (repeatable or comma-separated)."
        ),
    ],
) -> None:
    """Create an API key. The secret is printed once and never stored."""
    from ..server.auth import create_key

    scopes = [s.strip() for item in scope for s in item.split(",") if s.strip()]

    async def go() -> tuple[Any, str]:
        async with open_store(settings().store) as store:
            return await create_key(key_store(store), name, scopes)

    key, secret = run_async(go())
    err_console.print(
        f"created {key.id} for {key.name} with scopes {', '.join(key.scopes)}; "
        "the secret below is shown only now:",
        highlight=False,
    )
    console.print(secret, highlight=False, soft_wrap=True)


@command(keys_app, "list")
def keys_list() -> None:
    """Every key (secrets are not stored, so none is shown)."""

    async def go() -> list[Any]:
        async with open_store(settings().store) as store:
            return list(await key_store(store).list())

    keys = run_async(go())
    table = Table("id", "name", "scopes", "created", "revoked")
    for key in keys:
        table.add_row(
            key.id,
            key.name,
            ",".join(key.scopes),
            key.created_at.strftime("%Y-%m-%d %H:%M"),
            key.revoked_at.strftime("%Y-%m-%d %H:%M") if key.revoked_at else "",
        )
    console.print(table)


@command(keys_app, "revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")]) -> None:
    """Revoke a key: requests with it get 401 from then on."""

    async def go() -> bool:
        async with open_store(settings().store) as store:
            return await key_store(store).revoke(key_id, at=utcnow())

    if not run_async(go()):
        raise ConfigError(f"no active key {key_id!r} (see `threadline keys list`)")
    err_console.print(f"revoked {key_id}")
