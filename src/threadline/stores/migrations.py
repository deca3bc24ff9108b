"""Numbered schema migrations, recorded in the database they were applied to.

A migration is `(number, name, sql)`; numbers are dense from 1 and never reused or edited
once released. `threadline_migrations` records each applied number with its time, so any
database can say exactly which schema it has.
"""

from __future__ import annotations

import sqlite3

from ..events import utcnow

__all__ = ["SQLITE_MIGRATIONS", "apply_sqlite_migrations", "sqlite_schema_version"]

Migration = tuple[int, str, str]

SQLITE_MIGRATIONS: list[Migration] = [
    (
        1,
        "threads and events",
        """
        CREATE TABLE threads (
            id TEXT PRIMARY KEY,
            agent TEXT NOT NULL,
            status TEXT NOT NULL,
            next_seq INTEGER NOT NULL,
            schema_version INTEGER NOT NULL,
            metadata TEXT NOT NULL,
            state TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            due_at TEXT,
            lease_owner TEXT,
            lease_expires TEXT,
            lease_token INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX threads_status ON threads (status, id);
        CREATE INDEX threads_agent ON threads (agent, id);
        CREATE TABLE events (
            thread_id TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            at TEXT NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (thread_id, seq)
        ) WITHOUT ROWID;
        """,
    ),
    (
        2,
        "server API keys and webhook deliveries",
        """
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            secret_hash TEXT NOT NULL UNIQUE,
            scopes TEXT NOT NULL,
            created_at TEXT NOT NULL,
            revoked_at TEXT
        );
        CREATE TABLE webhook_deliveries (
            id TEXT PRIMARY KEY,
            received_at TEXT NOT NULL
        );
        CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at);
        """,
    ),
]


def sqlite_schema_version(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS threadline_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    row = conn.execute("SELECT MAX(version) FROM threadline_migrations").fetchone()
    return int(row[0] or 0)


def apply_sqlite_migrations(conn: sqlite3.Connection) -> list[int]:
    """Apply every migration newer than the database, each in its own transaction.

    Returns the numbers applied. Concurrent processes are safe: the version is re-read
    inside the write transaction, so a migration is applied once.
    """
    applied = []
    for number, name, sql in SQLITE_MIGRATIONS:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if sqlite_schema_version(conn) >= number:
                conn.execute("COMMIT")
                continue
            for statement in filter(str.strip, sql.split(";")):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO threadline_migrations (version, name, applied_at) VALUES (?,?,?)",
                (number, name, utcnow().isoformat()),
            )
            conn.execute("COMMIT")
            applied.append(number)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return applied
