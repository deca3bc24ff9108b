"""The `threadline` command line: a thin adapter over the runtime (Typer + Rich).

Each command group lives in its own module and registers itself on `app`:

    core.py     run, threads list/show (and the session, printer and drive all thread
                commands share)
    follow_up.py  approve, respond, message, threads event, resume, pause, cancel, fork,
                replay
    models.py   eval
    context.py  build, render, profile, prompts
    serve.py    serve
    api_keys.py keys create/list/revoke (the server's keys; serve.py adds the group)
    ops.py      worker, db, threads stuck/retry/prune/export/import
    index.py    index add/search/list/remove (retrieval)
    mcp.py      mcp (serve the runtime to MCP clients)
    channels.py channels list, channels email (the SMTP receiver alone)
    new.py      new (scaffold an agent project)
    schedules.py  schedules add/list/pause/resume/remove (cron)
    triggers.py   triggers list (webhook triggers of a config file or a server)

The thread commands in core.py and follow_up.py are written once against `api.ThreadsAPI`,
which both the local store (`api.LocalThreads`, a Runtime) and a server
(`threadline.client.Client`, with `--server URL`) satisfy; no command branches on where
the threads live.

Every command is declared with `common.command`, so each turns a `ThreadlineError` or bad
argument into one clear line on stderr and a non-zero exit; no traceback reaches the user.
"""

from __future__ import annotations

from .common import app

__all__ = ["app", "main"]


def _register() -> None:
    # Imported for their side effect of adding commands to `app`, in this order, which is
    # the order `threadline --help` lists them in (core's before follow_up's).
    from . import (  # noqa: F401
        channels,
        context,
        core,
        follow_up,
        index,
        mcp,
        models,
        new,
        ops,
        schedules,
        serve,
        triggers,
    )


def main() -> None:
    """Entry point of the `threadline` script."""
    _register()
    app()
