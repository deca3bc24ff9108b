"""The PostgreSQL index: built-in full-text search, and pgvector where it is installed.

Tables (in `?schema=name` when given): `retrieval_documents`, `retrieval_chunks` with a
generated `tsvector` column under a GIN index, and `retrieval_meta` (the embedder).

Vectors need the `vector` extension. At `open()` the index checks
`pg_available_extensions`: when `vector` is there it runs `CREATE EXTENSION IF NOT
EXISTS vector`, adds an `embedding vector(N)` column with an HNSW index
(`vector_cosine_ops`) and searches hybrid, like the embedded index. When it is not (or
this role may not create it), it logs a warning naming what is missing and runs lexical
only: `vectors` is False, `hybrid` answers lexically, and `stats()` says so. Nothing is
skipped silently.

Lexical ranking is `ts_rank(tsv, q, 1)` over an OR of the query's words
(`to_tsquery('english', ...)`), the closest built-in relative of BM25.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigError, MissingExtraError, RetrievalError
from .base import Document, DocumentPlan, IndexStats, MetadataFilter, Retriever, StoredChunk
from .embeddings import Embedder

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresRetriever"]

log = logging.getLogger("threadline.retrieval")


_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS retrieval_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS retrieval_documents (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL,
        title TEXT NOT NULL,
        metadata JSONB NOT NULL,
        indexed_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE IF NOT EXISTS retrieval_chunks (
        id TEXT PRIMARY KEY,
        document_id TEXT NOT NULL REFERENCES retrieval_documents(id) ON DELETE CASCADE,
        ordinal INTEGER NOT NULL,
        heading TEXT NOT NULL,
        text TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED
    )""",
    "CREATE INDEX IF NOT EXISTS retrieval_chunks_tsv ON retrieval_chunks USING GIN (tsv)",
    "CREATE INDEX IF NOT EXISTS retrieval_chunks_doc ON retrieval_chunks (document_id)",
]


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError as e:
        raise MissingExtraError("postgres", "psycopg") from e
    return psycopg


def _vector_literal(row: Any) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in row.tolist()) + "]"


def _filter_sql(flt: MetadataFilter | None) -> tuple[str, list[Any]]:
    """` AND ...` clauses on the document metadata and their parameters (keys checked by
    `Retriever.search`)."""
    sql, params = "", []
    for key, want in (flt or {}).items():
        values = list(want) if isinstance(want, list | tuple | set | frozenset) else [want]
        sql += " AND (d.metadata -> %s) = ANY(%s::jsonb[])"
        params.extend([key, [json.dumps(v) for v in values]])
    return sql, params


class PostgresRetriever(Retriever):
    """An index in PostgreSQL (`postgresql://user@host/db?schema=name`).

    Args:
        conninfo: libpq URL without Threadline's own parameters.
        embedder: turns text into vectors; used only where pgvector is installed.
        schema: the schema holding the tables (created when missing).
    """

    elsewhere = "another schema"

    def __init__(self, conninfo: str, embedder: Embedder | None, *, schema: str | None = None):
        if schema is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", schema):
            raise ConfigError(f"postgres schema name {schema!r} must be a plain identifier")
        self.conninfo = conninfo
        self.schema = schema
        self.url = conninfo + (f"?schema={schema}" if schema else "")
        self.embedder = embedder
        self.vectors = False
        self.notice = ""
        """Why vectors are off, when they are (also logged as a warning at open)."""
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, embedder: Embedder | None) -> PostgresRetriever:
        """`postgresql://user@host/db?schema=name`; other query parameters go to libpq."""
        parts = urlsplit(url)
        own = dict(kv for kv in parse_qsl(parts.query) if kv[0] == "schema")
        rest = [kv for kv in parse_qsl(parts.query) if kv[0] != "schema"]
        conninfo = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(rest)))
        return cls(conninfo, embedder, schema=own.get("schema"))

    @asynccontextmanager
    async def _cursor(self) -> AsyncIterator[psycopg.AsyncCursor[Any]]:
        if self._conn is None:
            raise ConfigError("the retriever is not open; use `async with open_retriever(...)`")
        psycopg = _import_psycopg()
        async with self._lock:
            try:
                async with self._conn.transaction(), self._conn.cursor() as cur:
                    yield cur
            except psycopg.OperationalError as e:
                raise RetrievalError(f"PostgreSQL index unavailable: {e}") from e

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is not None:
            return
        psycopg = _import_psycopg()
        try:
            self._conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        except psycopg.OperationalError as e:
            raise RetrievalError(f"cannot connect to the PostgreSQL index: {e}") from e
        async with self._cursor() as cur:
            if self.schema:
                await cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                await cur.execute(f'SET search_path TO "{self.schema}", public')
            for statement in _SCHEMA:
                await cur.execute(statement)
        if self.embedder is not None:
            await self._enable_vectors(self.embedder)
        await self._keep_embedder()

    async def _enable_vectors(self, embedder: Embedder) -> None:
        psycopg = _import_psycopg()
        async with self._cursor() as cur:
            await cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
            available = await cur.fetchone() is not None
        if not available:
            self.notice = (
                "the PostgreSQL server has no `vector` extension (pgvector): this index runs "
                "lexical only (full-text search); install pgvector for hybrid search"
            )
            log.warning("retrieval: %s", self.notice)
            return
        try:
            dims = embedder.dimensions
        except ConfigError:  # a provider's model: its size is known after one embedding
            dims = int((await embedder.embed(["dimensions"])).shape[1])
        try:
            async with self._cursor() as cur:
                await cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
                await cur.execute(
                    "ALTER TABLE retrieval_chunks ADD COLUMN IF NOT EXISTS embedding "
                    f"vector({dims})"
                )
                await cur.execute(
                    "CREATE INDEX IF NOT EXISTS retrieval_chunks_hnsw ON retrieval_chunks "
                    "USING hnsw (embedding vector_cosine_ops)"
                )
        except psycopg.Error as e:
            self.notice = f"pgvector could not be enabled ({e}); this index runs lexical only"
            log.warning("retrieval: %s", self.notice)
            return
        self.vectors = True

    async def _recorded_embedder(self) -> tuple[str | None, bool]:
        async with self._cursor() as cur:
            await cur.execute("SELECT value FROM retrieval_meta WHERE key = 'embedder'")
            row = await cur.fetchone()
            await cur.execute("SELECT count(*) FROM retrieval_chunks")
            count = await cur.fetchone()
        return (row[0] if row else None), count is not None and count[0] == 0

    async def _record_embedder(self, name: str) -> None:
        async with self._cursor() as cur:
            await cur.execute(
                "INSERT INTO retrieval_meta VALUES ('embedder', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (name,),
            )

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    # -- writes --------------------------------------------------------------------------

    async def _stored(self, documents: Sequence[Document]) -> list[tuple[str | None, set[str]]]:
        out = []
        async with self._cursor() as cur:
            for doc in documents:
                await cur.execute("SELECT hash FROM retrieval_documents WHERE id = %s", (doc.id,))
                row = await cur.fetchone()
                await cur.execute(
                    "SELECT id FROM retrieval_chunks WHERE document_id = %s", (doc.id,)
                )
                out.append((row[0] if row else None, {r[0] for r in await cur.fetchall()}))
        return out

    async def _write(self, plans: list[DocumentPlan], new: dict[str, Any]) -> None:
        async with self._cursor() as cur:
            for p in plans:
                d = p.document
                await cur.execute(
                    "INSERT INTO retrieval_documents (id, hash, title, metadata) "
                    "VALUES (%s, %s, %s, %s::jsonb) ON CONFLICT (id) DO UPDATE SET "
                    "hash = excluded.hash, title = excluded.title, metadata = excluded.metadata,"
                    " indexed_at = now()",
                    (d.id, p.hash, d.title, json.dumps(d.metadata, sort_keys=True)),
                )
                if p.stale:
                    await cur.execute("DELETE FROM retrieval_chunks WHERE id = ANY(%s)", (p.stale,))
                for c in p.chunks:
                    if c.id not in new:
                        await cur.execute(
                            "UPDATE retrieval_chunks SET ordinal = %s WHERE id = %s",
                            (c.ordinal, c.id),
                        )
                        continue
                    cols = "id, document_id, ordinal, heading, text, tokens"
                    args: tuple[Any, ...] = (c.id, d.id, c.ordinal, c.heading, c.text, c.tokens)
                    if self.vectors:
                        await cur.execute(
                            f"INSERT INTO retrieval_chunks ({cols}, embedding) "
                            "VALUES (%s, %s, %s, %s, %s, %s, %s::vector)",
                            (*args, _vector_literal(new[c.id])),
                        )
                    else:
                        await cur.execute(
                            f"INSERT INTO retrieval_chunks ({cols}) "
                            "VALUES (%s, %s, %s, %s, %s, %s)",
                            args,
                        )

    async def delete(self, document_ids: Sequence[str]) -> int:
        async with self._cursor() as cur:
            await cur.execute(
                "DELETE FROM retrieval_documents WHERE id = ANY(%s)", (list(document_ids),)
            )
            return cur.rowcount

    # -- reads ---------------------------------------------------------------------------

    async def _lexical(
        self, terms: list[str], depth: int, flt: MetadataFilter | None
    ) -> list[tuple[str, float]]:
        where, params = _filter_sql(flt)
        async with self._cursor() as cur:
            await cur.execute(
                "SELECT c.id, ts_rank(c.tsv, q, 1) AS r FROM retrieval_chunks c "
                "JOIN retrieval_documents d ON d.id = c.document_id, "
                "to_tsquery('english', %s) q "
                f"WHERE c.tsv @@ q{where} ORDER BY r DESC, c.id LIMIT %s",
                [" | ".join(terms), *params, depth],
            )
            return [(i, float(s)) for i, s in await cur.fetchall()]

    async def _vector(
        self, query: str, depth: int, flt: MetadataFilter | None
    ) -> list[tuple[str, float]]:
        if self.embedder is None:
            return []
        where, params = _filter_sql(flt)
        q = _vector_literal((await self.embedder.embed([query]))[0])
        async with self._cursor() as cur:
            await cur.execute(
                "SELECT c.id, 1 - (c.embedding <=> %s::vector) AS s FROM retrieval_chunks c "
                "JOIN retrieval_documents d ON d.id = c.document_id "
                f"WHERE c.embedding IS NOT NULL{where} "
                "ORDER BY c.embedding <=> %s::vector, c.id LIMIT %s",
                [q, *params, q, depth],
            )
            return [(i, float(s)) for i, s in await cur.fetchall()]

    async def _chunks(self, keys: list[str]) -> dict[str, StoredChunk]:
        async with self._cursor() as cur:
            await cur.execute(
                "SELECT c.id, c.document_id, c.text, c.tokens, c.heading, d.metadata "
                "FROM retrieval_chunks c JOIN retrieval_documents d ON d.id = c.document_id "
                "WHERE c.id = ANY(%s)",
                (keys,),
            )
            return {r[0]: StoredChunk(*r) for r in await cur.fetchall()}

    async def stats(self) -> IndexStats:
        async with self._cursor() as cur:
            await cur.execute(
                "SELECT d.id, d.title, d.metadata, d.indexed_at, count(c.id), "
                "coalesce(sum(c.tokens), 0) FROM retrieval_documents d LEFT JOIN "
                "retrieval_chunks c ON c.document_id = d.id GROUP BY d.id ORDER BY d.id"
            )
            rows = await cur.fetchall()
        return IndexStats(
            url=self.url,
            vectors=self.vectors,
            embedder=self.embedder.name if self.embedder and self.vectors else None,
            documents=[
                {
                    "id": i,
                    "title": t,
                    "metadata": m,
                    "indexed_at": at.isoformat(),
                    "chunks": n,
                    "tokens": int(tok),
                }
                for i, t, m, at, n, tok in rows
            ],
        )
