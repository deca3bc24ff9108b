"""`threadline serve`: the HTTP API, the inbox and the runner, in one process (API keys for
it: `threadline keys`, in `cli/api_keys.py`)."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from ..agent import Agent
from ..bootstrap import chosen_agents, open_runtime
from ..errors import ConfigError, MissingExtraError
from ..stores import key_store, open_store
from .api_keys import keys_app
from .common import (
    LockedOpt,
    ServedAgentsOpt,
    app,
    command,
    err_console,
    run_async,
    settings,
)

__all__ = ["is_loopback", "load_serve_config"]

app.add_typer(keys_app, name="keys")


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_serve_config(path: Path) -> dict[str, Any]:
    """A YAML file of `agents: [path.py:name, ...]`, and optionally `host`, `port` and
    `triggers` (webhook triggers, see `threadline.server.triggers`)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping with an `agents` list")
    unknown = set(data) - {"agents", "host", "port", "triggers"}
    if unknown:
        raise ConfigError(
            f"config {path}: unknown keys {', '.join(sorted(unknown))}; "
            "expected agents, host, port, triggers"
        )
    if not isinstance(data.get("triggers", []), list):
        raise ConfigError(f"config {path}: `triggers` must be a list")
    agents = data.get("agents", [])
    if not isinstance(agents, list) or not all(isinstance(a, str) for a in agents):
        raise ConfigError(f"config {path}: `agents` must be a list of path.py:name references")
    return data


@command(app)
def serve(
    agent: ServedAgentsOpt = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML file with `agents:` (and `host`, `port`)."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Interface to bind [127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [8000].")] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="No API keys (only allowed when binding to loopback).")
    ] = False,
    no_worker: Annotated[
        bool,
        typer.Option(
            "--no-worker", help="API only: append events, let `threadline worker` advance threads."
        ),
    ] = False,
    drain_timeout: Annotated[
        float, typer.Option(help="On SIGTERM, seconds to let running steps finish.")
    ] = 30.0,
    locked: LockedOpt = False,
) -> None:
    """Serve the HTTP API, the approvals inbox (/ui/) and run threads in the background."""
    try:
        import uvicorn

        from ..server import ServerConfig, Services, create_app
        from ..server.serving import GracefulServer
        from ..server.triggers import parse_triggers
    except ImportError as exc:
        raise MissingExtraError("server", exc.name or "fastapi") from None

    cfg = settings(locked)
    file_cfg = load_serve_config(config) if config else {}
    host = host or str(file_cfg.get("host", "127.0.0.1"))
    port = port if port is not None else int(file_cfg.get("port", 8000))
    if no_auth and not is_loopback(host):
        raise ConfigError(
            f"--no-auth is refused when binding to {host}: anyone who can reach "
            "it could act on threads; bind 127.0.0.1 or create a key with "
            "`threadline keys create`"
        )
    agents = _agents_to_serve(list(agent or []) + list(file_cfg.get("agents", [])))
    secret = cfg.webhook_secret.get_secret_value() if cfg.webhook_secret else None
    public_url = cfg.public_url or f"http://{_url_host(host)}:{port}"
    server_config = ServerConfig(
        auth=not no_auth,
        worker=not no_worker,
        webhook_secret=secret,
        notify_url=cfg.notify_url,
        public_url=public_url,
        drain_timeout=drain_timeout,
        metrics=cfg.metrics,
        metrics_auth=cfg.metrics_auth,
        triggers=tuple(parse_triggers(file_cfg.get("triggers", []))),
        delivery_retention=cfg.delivery_retention,
    )
    # Fail here, in one line, if the store is unreachable or its schema is older than this
    # code (SchemaOutOfDate names `threadline db migrate`), not inside uvicorn's start-up.
    run_async(_check_store(cfg.store))
    from ..channels import open_channels

    channels = open_channels(cfg.channels, agents=[a.name for a in agents])
    services = Services.build(
        server_config,
        lambda observers: open_runtime(cfg, agents, observers=observers),
        channels=channels,
    )
    fastapi_app = create_app(services)
    if not no_auth and not run_async(_has_keys(cfg.store)):
        err_console.print(
            "[yellow]no API keys yet:[/] create one with "
            "`threadline keys create --name you --scope admin` "
            "(or use --no-auth on loopback)"
        )
    _configure_logging()
    names = ", ".join(sorted(services.runtime.agents))
    err_console.print(
        f"threadline serving [bold]{names}[/] on {public_url} "
        f"(store {_redact_url(cfg.store)}, model {cfg.model}"
        f"{', API only' if no_worker else ''}{', no auth' if no_auth else ''}"
        f"{', channels ' + ', '.join(channels) if channels else ''}); "
        f"inbox: {public_url}/ui/",
        highlight=False,
        soft_wrap=True,
    )
    uv_config = uvicorn.Config(
        fastapi_app,
        host=host,
        port=port,
        log_level="info",
        lifespan="on",
        timeout_graceful_shutdown=int(drain_timeout) + 5,
        proxy_headers=False,
        server_header=False,
    )
    GracefulServer(uv_config, services).run()


def _agents_to_serve(refs: list[str]) -> list[Agent]:
    """The named agents, else the example agents when run from the project folder."""
    return chosen_agents(refs)


async def _check_store(store_url: str) -> None:
    async with open_store(store_url) as store:
        await store.ping()


async def _has_keys(store_url: str) -> bool:
    async with open_store(store_url) as store:
        return any(k.revoked_at is None for k in await key_store(store).list())


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - naming the wildcard, not binding it
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _redact_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _configure_logging() -> None:
    logger = logging.getLogger("threadline")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
