"""The app hears of a shutdown when its signal arrives, under any server.

uvicorn's graceful shutdown closes its sockets, then waits for every open connection to
finish its response, and only then runs the app's lifespan shutdown. A live event stream
never finishes by itself, so an app that learnt of the shutdown only from its lifespan
kept the process alive for `timeout_graceful_shutdown` (forever when unset, uvicorn's
default) as long as one browser followed a thread.

`shutdown_on_signals`, which the services' lifespan enters, makes SIGTERM and SIGINT begin
the services' shutdown at once, then go on to the server's own handler, which shuts down as
it always does: every open stream and `wait` ends, and uvicorn finds no connection to wait
for. That works wherever the app runs in the main thread (`uvicorn module:app`, uvicorn's
`--workers`, gunicorn's uvicorn workers). `threadline serve` runs `GracefulServer`
(`serving.py`) as well, for an exit that is no signal (`should_exit` set in code, a server
in another thread) and a clean exit status.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

__all__ = ["shutdown_on_signals"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def shutdown_on_signals(begin: Callable[[], None]) -> Iterator[None]:
    """While the block runs, SIGTERM and SIGINT first call `begin` (soon, on the running
    loop), then the handler installed before: the server's own. Only a signal the process
    handles in Python is taken: one it ignores stays ignored, and one left to its default
    still ends the process at once.

    Only in the main thread, where signals are handled: an app served from another thread
    needs `GracefulServer`. When the block ends, the previous handlers are put back (unless
    someone replaced this one meanwhile). `begin` must be safe to call more than once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}

    def handler(sig: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(begin)
        prior = previous[signal.Signals(sig)]
        if callable(prior):
            prior(sig, frame)

    ours = [sig for sig, prior in previous.items() if callable(prior)]
    for sig in ours:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig in ours:
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous[sig])
