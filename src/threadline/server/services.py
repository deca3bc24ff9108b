"""What every route works with, built once at start-up: the services object.

`Services.build(config, make_runtime)` creates the server's own runtime observers (the
change feed that wakes live streams, the notifier that posts signed webhooks) and hands them
to `make_runtime`, so the runtime is born with every observer it will ever have: nothing
adds observers to a running runtime. The routers receive the services through one FastAPI
dependency (`deps.py`); the app's lifespan is the services' `lifespan`.

    services = Services.build(
        ServerConfig(webhook_secret=...),
        lambda observers: Runtime(store, agents=agents, model=model, observers=observers),
    )
    app = create_app(services)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Concatenate, ParamSpec

from ..channels import Channel, Dispatcher, Hub
from ..errors import ConfigError
from ..events import Thread
from ..models.resilience import breakers_of
from ..observability.metrics import RuntimeMetrics
from ..runtime import Observer, Runtime
from ..stores import DeliveryLog, KeyStore, Store, delivery_log, key_store
from ..stores.keys import FORGET_AFTER
from ..wire import ThreadOut, thread_out
from .runner import ThreadRunner
from .shutdown import shutdown_on_signals
from .sse import ChangeFeed
from .triggers import Trigger
from .webhooks import Notifier

__all__ = ["Lifecycle", "ServerConfig", "Services"]

log = logging.getLogger("threadline.server")

P = ParamSpec("P")


@dataclass
class ServerConfig:
    """How the app behaves; built by `threadline serve` from flags and settings.

    Attributes:
        auth: require API keys on /v1 (only `threadline serve --no-auth` on loopback
            turns this off).
        worker: advance threads in this process; False for an API-only server whose
            threads are advanced by workers leasing from the same store.
        webhook_secret: HMAC secret for inbound webhooks and outbound notifications; inbound
            webhooks are refused while it is unset.
        notify_url: POST a signed notification here for each pending approval / question.
        public_url: this server's base URL, as notifications tell people to respond to.
        max_body_bytes: larger request bodies get a 413 before anything parses them.
        poll_interval: how often streams and waits re-read the store for appends made by
            other processes (appends made here wake them at once).
        drain_timeout: on shutdown, seconds to let running steps finish.
        close_store: close the runtime's store when the app shuts down.
        metrics: count events into Prometheus metrics served at GET /metrics.
        metrics_auth: GET /metrics needs an API key with the `read` scope. Off by default:
            Prometheus scrapes without credentials, so keep /metrics on a private network
            (or turn this on and give the scraper a read key).
        triggers: signed webhooks from other systems that launch threads (`triggers.py`).
        delivery_retention: how long inbound delivery ids (webhooks, triggers, Slack
            requests, mails) are remembered: a redelivery within it is a duplicate
            (`THREADLINE_DELIVERY_RETENTION`).
    """

    auth: bool = True
    worker: bool = True
    webhook_secret: str | None = None
    notify_url: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    max_body_bytes: int = 1 << 20
    webhook_tolerance: float = 300.0
    poll_interval: float = 1.0
    drain_timeout: float = 30.0
    concurrency: int = 32
    close_store: bool = True
    metrics: bool = True
    metrics_auth: bool = False
    channel_sweep_interval: float = 1.0
    """Seconds between passes over the channel outbox (reminders, expiries, retries)."""
    triggers: tuple[Trigger, ...] = ()
    delivery_retention: timedelta = FORGET_AFTER

    def trigger(self, name: str) -> Trigger | None:
        """The trigger named `name`, if configured."""
        return next((t for t in self.triggers if t.name == name), None)


class Lifecycle:
    """Shutdown state. `begin_shutdown` only flips flags, so a signal handler may call it."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.closing = False

    def begin_shutdown(self) -> None:
        """Stop taking work: new launches get 503, loops stop after their current step,
        streams end (at their next poll)."""
        self.closing = True
        self.runtime.stop()


@dataclass(frozen=True, slots=True)
class Services:
    """The server's collaborators. Invariant: `runtime.observers` already holds `feed` (and
    `notifier`, when configured) because `build` gave them to the runtime's constructor."""

    config: ServerConfig
    runtime: Runtime
    feed: ChangeFeed
    runner: ThreadRunner
    lifecycle: Lifecycle
    notifier: Notifier | None
    keys: KeyStore
    """The API keys kept beside the store's threads."""
    deliveries: DeliveryLog
    """The inbound webhook deliveries already received."""
    metrics: RuntimeMetrics | None = None
    """The Prometheus metrics of this process's runtime (None when turned off)."""
    channels: Mapping[str, Channel] = field(default_factory=dict)
    """The channels this server runs (`THREADLINE_CHANNELS`), mounted under
    /v1/channels/<name>."""
    dispatcher: Dispatcher | None = None
    """Sends notices on the channels (and acts on approval expiries) via the outbox."""
    hub: Hub | None = None
    """What the channels' inbound side acts through."""

    @property
    def store(self) -> Store:
        return self.runtime.store

    @classmethod
    def build(
        cls,
        config: ServerConfig,
        make_runtime: Callable[[Sequence[Observer]], Runtime],
        *,
        channels: Mapping[str, Channel] | None = None,
    ) -> Services:
        """Create the feed, notifier and channel dispatcher, then the runtime (given them
        as its observers). The dispatcher always runs: approval expiries need it even
        with no channel configured.

        Raises:
            ConfigError: notifications are configured without a secret to sign them.
        """
        if config.notify_url and not config.webhook_secret:
            raise ConfigError("notifications are signed: set THREADLINE_WEBHOOK_SECRET too")
        feed = ChangeFeed()
        notifier = None
        if config.notify_url and config.webhook_secret:
            notifier = Notifier(config.notify_url, config.webhook_secret, config.public_url)
        metrics = RuntimeMetrics() if config.metrics else None
        dispatcher = Dispatcher(channels or {})
        observers: list[Observer] = [feed]
        observers += [o for o in (notifier, metrics) if o is not None]
        observers.append(dispatcher)
        runtime = make_runtime(observers)
        unserved = [t.name for t in config.triggers if t.agent not in runtime.agents]
        if unserved and config.worker:
            raise ConfigError(
                f"trigger(s) {', '.join(unserved)} launch an agent this server does not serve"
            )
        # CPU-heavy work of a step (rendering, redaction, checking a large result) goes to
        # the runtime's worker thread: a 100,000-character launch must not hold /healthz.
        runtime.offload = True
        if metrics is not None:
            metrics.watch_breakers(
                lambda: breakers_of([runtime.model, *(a.model for a in runtime.agents.values())])
            )
        runner = ThreadRunner(
            runtime, enabled=config.worker, concurrency=config.concurrency, metrics=metrics
        )
        dispatcher.bind(runtime, runner.kick)
        return cls(
            config=config,
            runtime=runtime,
            feed=feed,
            runner=runner,
            lifecycle=Lifecycle(runtime),
            notifier=notifier,
            keys=key_store(runtime.store),
            deliveries=delivery_log(runtime.store, config.delivery_retention),
            metrics=metrics,
            channels=dict(channels or {}),
            dispatcher=dispatcher,
            hub=Hub(
                runtime, runner.kick, advances=config.worker, retention=config.delivery_retention
            ),
        )

    def closing(self) -> bool:
        return self.lifecycle.closing

    def begin_shutdown(self) -> None:
        """Stop taking work (`Lifecycle.begin_shutdown`) and wake every live stream and
        `wait` so they end now, not at their next poll. Call it on the event loop."""
        self.lifecycle.begin_shutdown()
        self.feed.wake_all()

    async def act(
        self,
        thread_id: str,
        action: Callable[Concatenate[str, P], Awaitable[Thread]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> ThreadOut:
        """A person's action on a thread through the API, `action(thread_id, *args,
        **kwargs)` (a runtime action: `svc.runtime.respond`, ...), checked and kicked as
        every channel's is (`Hub.act`), answered with the thread's wire view.

        A server that advances its threads (`config.worker`) can only move on a thread of
        an agent it serves: approving, answering or resuming another would write the
        action, then the thread would sit `running` forever. So `action` is refused with
        ConfigError (a 409 "Not served here") before anything is written; ThreadNotFound
        for an unknown id.
        """
        hub = self.hub_or_fail()
        return thread_out(await hub.act(thread_id, lambda: action(thread_id, *args, **kwargs)))

    @asynccontextmanager
    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        """Start: resume threads a previous process left running. Stop: refuse new work,
        let running steps finish (up to `drain_timeout`), flush notifications, close."""
        resumed = await self.runner.resume_running()
        self.runner.start_timers()
        if resumed:
            log.info("resuming %d thread(s) left running by a previous process", resumed)
        started: list[Channel] = []
        sweeper: asyncio.Task[None] | None = None
        try:
            for channel in self.channels.values():
                await channel.start(self.hub_or_fail())
                started.append(channel)
            if self.dispatcher is not None:
                # Catch up on what a stopped process left out, then send due notices,
                # reminders, expiries and retries until shutdown.
                outbox = self.dispatcher.serve(
                    interval=self.config.channel_sweep_interval, stopping=self.closing
                )
                sweeper = asyncio.get_running_loop().create_task(outbox, name="channel outbox")
            with shutdown_on_signals(self.begin_shutdown):  # under any server
                yield
        finally:
            self.begin_shutdown()
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            for channel in started:
                try:
                    await channel.stop()
                except Exception:
                    log.exception("stopping channel %s failed", channel.name)
            if not await self.runner.drain(self.config.drain_timeout):
                log.warning(
                    "shutdown: some steps did not finish in %.0fs; their threads "
                    "resume from the last checkpoint",
                    self.config.drain_timeout,
                )
            if self.notifier is not None:
                await self.notifier.aclose()
            if self.dispatcher is not None:
                await self.dispatcher.aclose()
            if self.config.close_store:
                await self.store.close()

    def hub_or_fail(self) -> Hub:
        if self.hub is None:
            raise ConfigError("services were built without a channel hub (use Services.build)")
        return self.hub
