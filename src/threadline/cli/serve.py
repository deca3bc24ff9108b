"""`threadline serve`: the HTTP API, the inbox and the runner, in one process (API keys for
it: `threadline keys`, in `cli/api_keys.py`)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..bootstrap import Loaded, chosen_agents, open_runtime
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
    settle,
)

if TYPE_CHECKING:
    from ..server import ServerConfig, Services
    from ..settings import Settings

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
        import uvicorn  # noqa: F401 - only checking that the extra is installed

        from ..server import Services, create_app
    except ImportError as exc:
        raise MissingExtraError("server", exc.name or "fastapi") from None

    cfg = settings(locked)
    file_cfg = load_serve_config(config) if config else {}
    host, port = _bind_address(host, port, file_cfg, no_auth=no_auth)
    agents = _agents_to_serve(list(agent or []) + list(file_cfg.get("agents", [])))
    server_config = _server_config(
        cfg,
        file_cfg,
        cfg.public_url or f"http://{_url_host(host)}:{port}",
        auth=not no_auth,
        worker=not no_worker,
        drain_timeout=drain_timeout,
    )
    # Fail here, in one line, if the store is unreachable or its schema is older than this
    # code (SchemaOutOfDate names `threadline db migrate`), not inside uvicorn's start-up.
    run_async(_check_store(cfg.store))
    from ..channels import open_channels

    channels = open_channels(cfg.channels, agents=list(agents))
    services = Services.build(
        server_config,
        lambda observers: open_runtime(cfg, agents, observers=observers),
        channels=channels,
    )
    fastapi_app = create_app(services)
    # Ready to serve: what start-up made lives as long as the process; frozen, a full
    # garbage collection no longer walks it on the event loop (threadline.heap).
    heap = settle(cfg)
    _announce(cfg, services, channels, heap)
    _run(fastapi_app, services, host, port)


def _bind_address(
    host: str | None, port: int | None, file_cfg: dict[str, Any], *, no_auth: bool
) -> tuple[str, int]:
    """The interface and port to bind: the flags, else the config file, else
    127.0.0.1:8000. `--no-auth` is refused (ConfigError) off loopback."""
    host = host or str(file_cfg.get("host", "127.0.0.1"))
    port = port if port is not None else int(file_cfg.get("port", 8000))
    if no_auth and not is_loopback(host):
        raise ConfigError(
            f"--no-auth is refused when binding to {host}: anyone who can reach "
            "it could act on threads; bind 127.0.0.1 or create a key with "
            "`threadline keys create`"
        )
    return host, port


def _server_config(
    cfg: Settings,
    file_cfg: dict[str, Any],
    public_url: str,
    *,
    auth: bool,
    worker: bool,
    drain_timeout: float,
) -> ServerConfig:
    """The server's configuration: the settings (environment), the config file's
    triggers and the command's flags."""
    from ..server import ServerConfig
    from ..server.triggers import parse_triggers

    return ServerConfig(
        auth=auth,
        worker=worker,
        webhook_secret=cfg.webhook_secret.get_secret_value() if cfg.webhook_secret else None,
        notify_url=cfg.notify_url,
        public_url=public_url,
        drain_timeout=drain_timeout,
        metrics=cfg.metrics,
        metrics_auth=cfg.metrics_auth,
        triggers=tuple(parse_triggers(file_cfg.get("triggers", []))),
        delivery_retention=cfg.delivery_retention,
    )


def _announce(cfg: Settings, services: Services, channels: Mapping[str, object], heap: str) -> None:
    """Say what is served where (and warn when no API key exists yet), on stderr; `heap`
    says whether start-up's objects were frozen (`settle`)."""
    config = services.config
    if config.auth and not run_async(_has_keys(cfg.store)):
        err_console.print(
            "[yellow]no API keys yet:[/] create one with "
            "`threadline keys create --name you --scope admin` "
            "(or use --no-auth on loopback)"
        )
    _configure_logging()
    names = ", ".join(sorted(services.runtime.agents))
    err_console.print(
        f"threadline serving [bold]{names}[/] on {config.public_url} "
        f"(store {_redact_url(cfg.store)}, model {cfg.model}"
        f"{'' if config.worker else ', API only'}{'' if config.auth else ', no auth'}"
        f"{', channels ' + ', '.join(channels) if channels else ''}); "
        f"inbox: {config.public_url}/ui/; {heap}",
        highlight=False,
        soft_wrap=True,
    )


def _run(app: Any, services: Services, host: str, port: int) -> None:
    """Serve `app` until SIGTERM/SIGINT, then shut down gracefully (`GracefulServer`);
    uvicorn cancels what is still open 5 s after the drain timeout."""
    import uvicorn

    from ..server.serving import GracefulServer

    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        lifespan="on",
        timeout_graceful_shutdown=int(services.config.drain_timeout) + 5,
        proxy_headers=False,
        server_header=False,
    )
    GracefulServer(uv_config, services).run()


def _agents_to_serve(refs: list[str]) -> Loaded:
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
