"""The app under uvicorn, told the moment a shutdown begins (`threadline serve` runs this).

uvicorn's graceful shutdown closes its sockets, then waits for every open connection to
finish its response, and only then runs the app's lifespan shutdown. A live event stream
never finishes by itself, so an app that heard of the shutdown only from its lifespan held
it for `timeout_graceful_shutdown` (forever when unset) while one browser was connected.
`GracefulServer` begins the services' shutdown first: launches answer 503, run loops stop
after their current step, and every open stream and `wait` is woken and ends at once;
requests already in flight still finish, then the lifespan drains the runner.

The lifespan does the same on SIGTERM and SIGINT under any server (`shutdown.py`);
`GracefulServer` also covers an exit that is no signal (`should_exit` set in code, a server
run in another thread, as the tests run theirs) and exits 0 after a signal.
"""

from __future__ import annotations

import socket
from types import FrameType

import uvicorn

from .services import Services

__all__ = ["GracefulServer"]


class GracefulServer(uvicorn.Server):
    """uvicorn's server that begins `services`' shutdown before waiting for connections,
    whether the exit came from SIGTERM/SIGINT or from `should_exit` set in code.

    Invariant: once `shutdown` has started, `services.closing()` is true and no live
    stream sleeps past the wake-up it was just given.
    """

    def __init__(self, config: uvicorn.Config, services: Services) -> None:
        super().__init__(config)
        self.services = services

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Launches answer 503 from the signal on, not from the next tick of the main loop.
        self.services.lifecycle.begin_shutdown()
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signal after shutdown (exit status -15); a drained,
        # checkpointed shutdown is a clean exit, so report 0 instead.
        self._captured_signals.clear()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.services.begin_shutdown()
        await super().shutdown(sockets)
