"""Settling the heap once a long-running process has started (`settle_heap`).

CPython's cyclic garbage collector walks every tracked object in a full (generation-2)
collection, and a process that serves agents holds tens of thousands of long-lived ones
made at start-up: modules, classes, pydantic schemas and validators, the agents, the app.
None of them will become garbage, yet each full collection walks them all again, on the
thread that happened to allocate, so on an event loop it stalls every thread the process
advances (docs/performance.md, "A full collection stalls every turn": 22.7 ms of a 64-thread
run on a slow CPU). `gc.freeze()` moves every object alive now to a permanent generation
the collector no longer walks; a full collection afterwards walks only what was made since.

Invariant: objects frozen are never collected, even if they become garbage later. So this
is called once, after start-up (imports done, app and agents loaded), never in a loop:
what a process makes and drops while it serves stays collectable.

`threadline serve`, `threadline worker` and `threadline mcp` call it once they are ready,
unless THREADLINE_GC_FREEZE=0 (`Settings.gc_freeze`). A program that runs a `Runtime` in
its own process can call it after its own start-up.
"""

from __future__ import annotations

import gc

__all__ = ["settle_heap"]


def settle_heap() -> int:
    """Collect what start-up left as garbage, then freeze every object still alive.

    Call it once, when the process is ready to serve (see the module docstring for why
    not more often): a full `gc.collect()` first, so that start-up's garbage is freed
    rather than kept forever, then `gc.freeze()`.

    Returns:
        The number of objects now in the permanent generation (`gc.get_freeze_count()`),
        those frozen by earlier calls included.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
