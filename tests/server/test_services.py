"""services.py: the services built once at start-up, and a shutdown that refuses new work."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from server_support import LiveServer
from threadline import Agent
from threadline.errors import ConfigError
from threadline.events import Status
from threadline.runtime import Observer, Runtime
from threadline.server import ServerConfig, Services, create_app
from threadline.stores import MemoryStore
from threadline.testing import FunctionModel, intent


def test_shutdown_refuses_new_work(live: LiveServer) -> None:
    thread = live.launch()
    live.services.lifecycle.begin_shutdown()
    with live.client("admin") as c:
        r = c.post("/v1/threads", json={"agent": "deploybot", "message": "one more"})
        assert r.status_code == 503
        assert r.headers["content-type"].startswith("application/problem+json")
        assert c.get("/readyz").status_code == 503
        assert c.get("/healthz").status_code == 200
        assert c.get(f"/v1/threads/{thread['id']}").status_code == 200  # reads still work


def test_the_runtime_is_born_with_the_server_observers() -> None:
    given: list[list[object]] = []

    def make_runtime(observers: Sequence[Observer]) -> Runtime:
        given.append(list(observers))
        return Runtime(MemoryStore(), observers=observers)

    config = ServerConfig(notify_url="http://127.0.0.1:9/hook", webhook_secret="s3cret")
    services = Services.build(config, make_runtime)
    assert services.notifier is not None
    born = [services.feed, services.notifier, services.metrics, services.dispatcher]
    assert given == [born]
    app = create_app(services)
    # Building the app adds nothing to the runtime, and keeps one thing in app.state.
    assert services.runtime.observers == born
    assert app.state._state == {"services": services}


def test_notifications_without_a_secret_are_refused_before_the_runtime_is_built() -> None:
    def make_runtime(observers: Sequence[Observer]) -> Runtime:
        raise AssertionError("built a runtime for a server that cannot start")

    with pytest.raises(ConfigError, match="signed"):
        Services.build(ServerConfig(notify_url="http://127.0.0.1:9/hook"), make_runtime)


class ClosedStore(MemoryStore):
    closed = 0

    async def close(self) -> None:
        self.closed += 1
        await super().close()


async def test_the_lifespan_resumes_running_threads_and_closes_the_store() -> None:
    runtime_store = ClosedStore()
    agent = Agent(name="echo", instructions="Say done.")
    model = FunctionModel(lambda _: intent("done_for_now", message="ok"), model_id="f")
    services = Services.build(
        ServerConfig(poll_interval=0.05),
        lambda observers: Runtime(runtime_store, agents=[agent], model=model, observers=observers),
    )
    left = await services.runtime.launch("echo", "hi", advance=False)  # a crash left it running
    async with services.lifespan(None):
        thread = await services.runtime.store.load(left.id)
        for _ in range(200):
            if thread.status != Status.RUNNING:
                break
            await asyncio.sleep(0.02)
            thread = await services.runtime.store.load(left.id)
        assert thread.status == Status.DONE
    assert services.lifecycle.closing and runtime_store.closed == 1
