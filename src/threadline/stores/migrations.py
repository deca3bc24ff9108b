"""The numbered schema migrations of both SQL databases, written once.

A migration is `(number, name, sql)`; numbers are dense from 1 and never reused or edited
once released: a change to the schema is a new migration. Each is written once, for *both*
databases, with holes for what differs between them (`_SQLITE` and `_POSTGRES` fill them):
the column types (TEXT times and JSON in SQLite, TIMESTAMPTZ and JSONB in PostgreSQL, ...)
and the few clauses one database alone has. So both create the same tables and columns
by construction; `tests/stores/test_migrations.py` migrates a real database of each kind
and compares them.
Each database records the numbers applied to it in `threadline_migrations`
(`SQLiteStore.migrations()`, `PostgresStore.migrations()`), so any database can say
exactly which schema it has. SQLite applies pending migrations when a store opens its file;
PostgreSQL only on `threadline db migrate` (see the stores).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["POSTGRES_MIGRATIONS", "SQLITE_MIGRATIONS", "Migration"]

Migration = tuple[int, str, str]
"""(number, name, SQL: statements separated by semicolons)."""

_MIGRATIONS: list[Migration] = [
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
            metadata {json} NOT NULL,
            state {json} NOT NULL,
            created_at {time} NOT NULL,
            updated_at {time} NOT NULL,
            due_at {time},
            lease_owner TEXT,
            lease_expires {time},
            lease_token {int64} NOT NULL DEFAULT 0
        );
        CREATE INDEX threads_status ON threads (status, id);
        CREATE INDEX threads_agent ON threads (agent, id);
        {lease_index}
        CREATE TABLE events (
            thread_id TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            at {time} NOT NULL,
            body {json} NOT NULL,
            PRIMARY KEY (thread_id, seq)
        ){without_rowid};
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
            created_at {time} NOT NULL,
            revoked_at {time}
        );
        CREATE TABLE webhook_deliveries (
            id TEXT PRIMARY KEY,
            received_at {time} NOT NULL
        );
        CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at);
        """,
    ),
    (
        3,
        "channel outbox and conversations",
        """
        CREATE TABLE channel_outbox (
            id TEXT PRIMARY KEY,
            thread_id TEXT NOT NULL,
            topic TEXT NOT NULL,
            channel TEXT NOT NULL,
            body {json} NOT NULL,
            status TEXT NOT NULL,
            due_at {time} NOT NULL,
            claimed_until {time},
            attempts INTEGER NOT NULL DEFAULT 0,
            ref {json},
            error TEXT,
            created_at {time} NOT NULL,
            sent_at {time}
        );
        CREATE INDEX channel_outbox_due ON channel_outbox (status, due_at);
        CREATE INDEX channel_outbox_topic ON channel_outbox (thread_id, topic);
        CREATE TABLE channel_conversations (
            channel TEXT NOT NULL,
            conversation TEXT NOT NULL,
            thread_id TEXT NOT NULL,
            created_at {time} NOT NULL,
            PRIMARY KEY (channel, conversation)
        );
        """,
    ),
    (
        4,
        "schedules and their firings",
        """
        CREATE TABLE schedules (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            agent TEXT NOT NULL,
            message TEXT NOT NULL,
            cron TEXT NOT NULL,
            timezone TEXT NOT NULL,
            missed TEXT NOT NULL,
            destination TEXT,
            paused INTEGER NOT NULL DEFAULT 0,
            created_at {time} NOT NULL,
            fired_through {time} NOT NULL
        );
        CREATE TABLE schedule_firings (
            schedule_id TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
            tick {time} NOT NULL,
            thread_id TEXT NOT NULL,
            fired_at {time} NOT NULL,
            PRIMARY KEY (schedule_id, tick)
        );
        """,
    ),
    (
        5,
        "rate limits",
        """
        CREATE TABLE rate_limit_slots (
            key TEXT NOT NULL,
            slot INTEGER NOT NULL,
            free_at {float} NOT NULL,
            PRIMARY KEY (key, slot)
        );
        CREATE INDEX rate_limit_slots_free ON rate_limit_slots (key, free_at);
        CREATE TABLE rate_limit_buckets (
            key TEXT PRIMARY KEY,
            level {float} NOT NULL,
            at {float} NOT NULL
        );
        """,
    ),
    (
        6,
        "budget totals of thread trees",
        """
        CREATE TABLE budget_trees (
            root TEXT PRIMARY KEY,
            used_calls {int64} NOT NULL DEFAULT 0,
            used_tokens {int64} NOT NULL DEFAULT 0,
            used_usd {float} NOT NULL DEFAULT 0,
            reserved_calls {int64} NOT NULL DEFAULT 0,
            reserved_tokens {int64} NOT NULL DEFAULT 0,
            reserved_usd {float} NOT NULL DEFAULT 0
        );
        """,
    ),
]
"""Both databases' migrations, with `{hole}`s for what differs (see `_SQLITE`)."""

_SQLITE = {
    "time": "TEXT",
    "json": "TEXT",
    "int64": "INTEGER",
    "float": "REAL",
    "without_rowid": " WITHOUT ROWID",
    "lease_index": "",  # its planner needs no partial index for leasing
}
"""What SQLite writes in each hole: times as ISO text, JSON as text."""

_POSTGRES = {
    "time": "TIMESTAMPTZ",
    "json": "JSONB",
    "int64": "BIGINT",
    "float": "DOUBLE PRECISION",
    "without_rowid": "",
    "lease_index": (
        "CREATE INDEX threads_runnable ON threads (updated_at) "
        "WHERE status IN ('running', 'waiting');"
    ),
}
"""What PostgreSQL writes in each hole, with a partial index for leasing."""


def _written_for(types: Mapping[str, str]) -> list[Migration]:
    return [(number, name, sql.format_map(types)) for number, name, sql in _MIGRATIONS]


SQLITE_MIGRATIONS: list[Migration] = _written_for(_SQLITE)
POSTGRES_MIGRATIONS: list[Migration] = _written_for(_POSTGRES)
