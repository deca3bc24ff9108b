"""PostgreSQL for tests: the real server (fixtures re-exported by tests/conftest.py).

PostgreSQL tests use `THREADLINE_TEST_POSTGRES_URL` (default: the local server's `test`
database). With CI=true an unreachable server FAILS the tests; elsewhere they skip with a
message saying how to enable them. Each test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_base_url() -> str:
    return os.environ.get("THREADLINE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of a reachable PostgreSQL server, or skip (fail under CI=true)."""
    url = postgres_base_url()
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=3).close()
    except Exception as exc:
        reason = f"PostgreSQL is not reachable at {url}: {' '.join(str(exc).split())[:200]}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(
                f"{reason} (CI=true: PostgreSQL tests must run; start it with scripts/services.sh)"
            )
        pytest.skip(
            f"{reason}. To run the PostgreSQL tests, start a server (bash "
            "scripts/services.sh) or set THREADLINE_TEST_POSTGRES_URL=postgresql://..."
        )
    return url


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A fresh, empty schema name for one test; dropped with everything in it afterwards."""
    import psycopg

    name = f"tl_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def pg_store_url(base: str, schema: str, *, migrate: bool = True) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}schema={schema}" + ("&migrate=auto" if migrate else "")
