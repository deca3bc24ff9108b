"""`threadline new NAME`: scaffold a runnable agent project (see threadline.scaffold)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import app, command, console, err_console

__all__: list[str] = []


@command(app)
def new(
    name: Annotated[str, typer.Argument(help="The agent's name, and the folder it goes in.")],
    directory: Annotated[
        Path, typer.Option("--dir", "-d", help="Where to create the folder [.].")
    ] = Path("."),
) -> None:
    """Create NAME/: an agent with one tool, its prompt, prompt cases, tests and a README."""
    from .. import __version__
    from ..scaffold import new_agent

    written = new_agent(name, directory, version=__version__)
    root = directory / name
    for path in written:
        console.print(f"  created {path.relative_to(directory)}", highlight=False)
    err_console.print(
        f"next: cd {root} && pytest && threadline build "
        f'&& threadline run agent.py:agent "where is order A-1001?"',
        highlight=False,
        soft_wrap=True,
    )
