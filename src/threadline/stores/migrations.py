"""The numbered schema migrations of both SQL databases, side by side.

A migration is `(number, name, sql)`; numbers are dense from 1 and never reused or edited
once released: a change to the schema is a new migration, written for *both* databases
with the same number and name, creating the same tables and columns (each in its own
types: TEXT times and JSON in SQLite, TIMESTAMPTZ and JSONB in PostgreSQL).
`tests/stores/test_migrations.py` migrates a real database of each kind and compares them.
Each database records the numbers applied to it in `threadline_migrations`
(`SQLiteStore.migrations()`, `PostgresStore.migrations()`), so any database can say
exactly which schema it has. SQLite applies pending migrations when a store opens its file;
PostgreSQL only on `threadline db migrate` (see the stores).
"""

from __future__ import annotations

__all__ = ["POSTGRES_MIGRATIONS", "SQLITE_MIGRATIONS", "Migration"]

Migration = tuple[int, str, str]
"""(number, name, SQL: statements separated by semicolons)."""

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
    (
        3,
        "channel outbox and conversations",
        """
        CREATE TABLE channel_outbox (
            id TEXT PRIMARY KEY,
            thread_id TEXT NOT NULL,
            topic TEXT NOT NULL,
            channel TEXT NOT NULL,
            body TEXT NOT NULL,
            status TEXT NOT NULL,
            due_at TEXT NOT NULL,
            claimed_until TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            ref TEXT,
            error TEXT,
            created_at TEXT NOT NULL,
            sent_at TEXT
        );
        CREATE INDEX channel_outbox_due ON channel_outbox (status, due_at);
        CREATE INDEX channel_outbox_topic ON channel_outbox (thread_id, topic);
        CREATE TABLE channel_conversations (
            channel TEXT NOT NULL,
            conversation TEXT NOT NULL,
            thread_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
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
            created_at TEXT NOT NULL,
            fired_through TEXT NOT NULL
        );
        CREATE TABLE schedule_firings (
            schedule_id TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
            tick TEXT NOT NULL,
            thread_id TEXT NOT NULL,
            fired_at TEXT NOT NULL,
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
            free_at REAL NOT NULL,
            PRIMARY KEY (key, slot)
        );
        CREATE INDEX rate_limit_slots_free ON rate_limit_slots (key, free_at);
        CREATE TABLE rate_limit_buckets (
            key TEXT PRIMARY KEY,
            level REAL NOT NULL,
            at REAL NOT NULL
        );
        """,
    ),
    (
        6,
        "budget totals of thread trees",
        """
        CREATE TABLE budget_trees (
            root TEXT PRIMARY KEY,
            used_calls INTEGER NOT NULL DEFAULT 0,
            used_tokens INTEGER NOT NULL DEFAULT 0,
            used_usd REAL NOT NULL DEFAULT 0,
            reserved_calls INTEGER NOT NULL DEFAULT 0,
            reserved_tokens INTEGER NOT NULL DEFAULT 0,
            reserved_usd REAL NOT NULL DEFAULT 0
        );
        """,
    ),
]

POSTGRES_MIGRATIONS: list[Migration] = [
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
            metadata JSONB NOT NULL,
            state JSONB NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            due_at TIMESTAMPTZ,
            lease_owner TEXT,
            lease_expires TIMESTAMPTZ,
            lease_token BIGINT NOT NULL DEFAULT 0
        );
        CREATE INDEX threads_status ON threads (status, id);
        CREATE INDEX threads_agent ON threads (agent, id);
        CREATE INDEX threads_runnable ON threads (updated_at)
            WHERE status IN ('running', 'waiting');
        CREATE TABLE events (
            thread_id TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            at TIMESTAMPTZ NOT NULL,
            body JSONB NOT NULL,
            PRIMARY KEY (thread_id, seq)
        );
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
            created_at TIMESTAMPTZ NOT NULL,
            revoked_at TIMESTAMPTZ
        );
        CREATE TABLE webhook_deliveries (
            id TEXT PRIMARY KEY,
            received_at TIMESTAMPTZ NOT NULL
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
            body JSONB NOT NULL,
            status TEXT NOT NULL,
            due_at TIMESTAMPTZ NOT NULL,
            claimed_until TIMESTAMPTZ,
            attempts INTEGER NOT NULL DEFAULT 0,
            ref JSONB,
            error TEXT,
            created_at TIMESTAMPTZ NOT NULL,
            sent_at TIMESTAMPTZ
        );
        CREATE INDEX channel_outbox_due ON channel_outbox (status, due_at);
        CREATE INDEX channel_outbox_topic ON channel_outbox (thread_id, topic);
        CREATE TABLE channel_conversations (
            channel TEXT NOT NULL,
            conversation TEXT NOT NULL,
            thread_id TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
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
            created_at TIMESTAMPTZ NOT NULL,
            fired_through TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE schedule_firings (
            schedule_id TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
            tick TIMESTAMPTZ NOT NULL,
            thread_id TEXT NOT NULL,
            fired_at TIMESTAMPTZ NOT NULL,
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
            free_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (key, slot)
        );
        CREATE INDEX rate_limit_slots_free ON rate_limit_slots (key, free_at);
        CREATE TABLE rate_limit_buckets (
            key TEXT PRIMARY KEY,
            level DOUBLE PRECISION NOT NULL,
            at DOUBLE PRECISION NOT NULL
        );
        """,
    ),
    (
        6,
        "budget totals of thread trees",
        """
        CREATE TABLE budget_trees (
            root TEXT PRIMARY KEY,
            used_calls BIGINT NOT NULL DEFAULT 0,
            used_tokens BIGINT NOT NULL DEFAULT 0,
            used_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
            reserved_calls BIGINT NOT NULL DEFAULT 0,
            reserved_tokens BIGINT NOT NULL DEFAULT 0,
            reserved_usd DOUBLE PRECISION NOT NULL DEFAULT 0
        );
        """,
    ),
]
