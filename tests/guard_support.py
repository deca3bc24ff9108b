"""Tools for the guard tests: a destructive drop and a reversible archive, each recording
what it did."""

from __future__ import annotations

from threadline import tool

DROPPED: list[str] = []
ARCHIVED: list[str] = []


@tool(side_effects=True)
def drop_table(table: str) -> str:
    """Delete a database table and all its rows, for good.

    Args:
        table: the table
    """
    DROPPED.append(table)
    return f"dropped {table}"


@tool(side_effects=True)
def archive_table(table: str) -> str:
    """Move a table to the archive (it can be restored).

    Args:
        table: the table
    """
    ARCHIVED.append(table)
    return f"archived {table}"
