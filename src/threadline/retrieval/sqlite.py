"""The embedded index: one SQLite file, FTS5 (BM25) for words, numpy for vectors.

Tables: `documents` (id, content hash, metadata), `chunks` (text, token count, embedding
as float32 bytes) and `chunks_fts`, an external-content FTS5 table over `chunks.text`
(porter stemming) kept in step by triggers. `retrieval_meta` records the embedder, and an
index built with one embedder refuses to be searched with another.

Vector search is exact: the embeddings are loaded once into a float32 matrix (rebuilt after
a write) and scored with one matrix-vector product. bench/retrieval.py measures it; at 384
dimensions it stays in single-digit milliseconds up to about 100,000 chunks, past which the
PostgreSQL backend (pgvector, HNSW) is the tool (docs/retrieval.md).

SQLite work runs on one worker thread per index (a single connection), so the event loop
never blocks on the file.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ..errors import ConfigError
from .base import Document, DocumentPlan, IndexStats, MetadataFilter, Retriever, StoredChunk
from .embeddings import Embedder

__all__ = ["SQLiteRetriever"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS retrieval_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    title TEXT NOT NULL,
    metadata TEXT NOT NULL,
    indexed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    heading TEXT NOT NULL,
    text TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    embedding BLOB
);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks(document_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, content='chunks', content_rowid='rowid', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.rowid, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
END;
"""

"""How deep each ranking goes before fusion (at least 4 x k)."""


def filter_sql(flt: MetadataFilter | None, alias: str = "d") -> tuple[str, list[Any]]:
    """` AND ...` clauses (json_extract on the document metadata) and their parameters
    (keys checked by `Retriever.search`)."""
    sql, params = "", []
    for key, want in (flt or {}).items():
        col = f"json_extract({alias}.metadata, '$.\"{key}\"')"
        values = list(want) if isinstance(want, list | tuple | set | frozenset) else [want]
        sql += f" AND {col} IN ({','.join('?' * len(values))})"
        params.extend(values)
    return sql, params


class SQLiteRetriever(Retriever):
    """The embedded index (`sqlite:///path/index.db`).

    Args:
        path: the database file (created with its directory when missing).
        embedder: turns text into vectors; None makes a lexical-only index.
    """

    elsewhere = "a new file"

    def __init__(self, path: str, embedder: Embedder | None) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self.embedder = embedder
        self.vectors = embedder is not None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retrieval")
        self._conn: sqlite3.Connection | None = None
        self._matrix: tuple[Any, Any] | None = None  # (rowids, float32 matrix)

    @classmethod
    def from_url(cls, url: str, embedder: Embedder | None) -> SQLiteRetriever:
        """`sqlite:///relative.db` or `sqlite:////absolute.db`."""
        parts = urlsplit(url)
        if parts.scheme != "sqlite" or not parts.path[1:]:
            raise ConfigError(f"retrieval URL {url!r} names no file; e.g. sqlite:///index.db")
        return cls(parts.path[1:], embedder)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise ConfigError("the retriever is not open; use `async with open_retriever(...)`")
        conn = self._conn
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn)

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is not None:
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)

        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(_SCHEMA)
            return conn

        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, connect)
        await self._keep_embedder()

    async def _recorded_embedder(self) -> tuple[str | None, bool]:
        def read(conn: sqlite3.Connection) -> tuple[str | None, bool]:
            row = conn.execute("SELECT value FROM retrieval_meta WHERE key='embedder'").fetchone()
            empty = conn.execute("SELECT count(*) FROM chunks").fetchone()[0] == 0
            return (row[0] if row else None), empty

        return await self._run(read)

    async def _record_embedder(self, name: str) -> None:
        def record(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO retrieval_meta VALUES ('embedder', ?)", (name,))

        await self._run(record)

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(lambda c: c.close())
            self._conn = None
        self._executor.shutdown(wait=False)

    # -- writes --------------------------------------------------------------------------

    async def _stored(self, documents: Sequence[Document]) -> list[tuple[str | None, set[str]]]:
        def stored(conn: sqlite3.Connection) -> list[tuple[str | None, set[str]]]:
            out = []
            for doc in documents:
                row = conn.execute("SELECT hash FROM documents WHERE id=?", (doc.id,)).fetchone()
                ids = {
                    r[0]
                    for r in conn.execute("SELECT id FROM chunks WHERE document_id=?", (doc.id,))
                }
                out.append((row[0] if row else None, ids))
            return out

        return await self._run(stored)

    async def _write(self, plans: list[DocumentPlan], new: dict[str, Any]) -> None:
        blobs = {cid: (e.tobytes() if e is not None else None) for cid, e in new.items()}
        now = datetime.now(UTC).isoformat()

        def write(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                for p in plans:
                    d = p.document
                    conn.execute(
                        "INSERT INTO documents VALUES (?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                        "hash=excluded.hash, title=excluded.title, metadata=excluded.metadata, "
                        "indexed_at=excluded.indexed_at",
                        (d.id, p.hash, d.title, json.dumps(d.metadata, sort_keys=True), now),
                    )
                    conn.executemany("DELETE FROM chunks WHERE id=?", [(i,) for i in p.stale])
                    for c in p.chunks:
                        if c.id in blobs:
                            conn.execute(
                                "INSERT INTO chunks (id, document_id, ordinal, heading, text, "
                                "tokens, embedding) VALUES (?,?,?,?,?,?,?)",
                                (c.id, d.id, c.ordinal, c.heading, c.text, c.tokens, blobs[c.id]),
                            )
                        else:
                            conn.execute(
                                "UPDATE chunks SET ordinal=? WHERE id=?", (c.ordinal, c.id)
                            )

        await self._run(write)
        self._matrix = None

    async def delete(self, document_ids: Sequence[str]) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                n = 0
                for doc_id in document_ids:
                    conn.execute("DELETE FROM chunks WHERE document_id=?", (doc_id,))
                    n += conn.execute("DELETE FROM documents WHERE id=?", (doc_id,)).rowcount
                return n

        n = await self._run(delete)
        self._matrix = None
        return n

    # -- reads ---------------------------------------------------------------------------

    async def _lexical(
        self, terms: list[str], depth: int, flt: MetadataFilter | None
    ) -> list[tuple[str, float]]:
        match = " OR ".join('"' + t.replace('"', "") + '"' for t in terms)
        where, params = filter_sql(flt)
        rows = await self._run(
            lambda c: c.execute(
                "SELECT c.rowid, bm25(chunks_fts) FROM chunks_fts JOIN chunks c "
                "ON c.rowid = chunks_fts.rowid JOIN documents d ON d.id = c.document_id "
                f"WHERE chunks_fts MATCH ?{where} ORDER BY bm25(chunks_fts), c.rowid LIMIT ?",
                [match, *params, depth],
            ).fetchall()
        )
        return [(str(r), -s) for r, s in rows]

    async def _vector(
        self, query: str, depth: int, flt: MetadataFilter | None
    ) -> list[tuple[str, float]]:
        import numpy as np

        if self.embedder is None:
            return []
        q = (await self.embedder.embed([query]))[0]
        if self._matrix is None:
            self._matrix = await self._run(self._load_matrix)
        rowids, matrix = self._matrix
        if not len(rowids):
            return []
        scores = matrix @ q
        if flt:
            where, params = filter_sql(flt)
            allowed = await self._run(
                lambda c: [
                    r
                    for (r,) in c.execute(
                        "SELECT c.rowid FROM chunks c JOIN documents d ON d.id = c.document_id "
                        f"WHERE 1=1{where}",
                        params,
                    )
                ]
            )
            scores = np.where(np.isin(rowids, np.asarray(allowed, dtype=np.int64)), scores, -np.inf)
        n = min(depth, len(rowids))
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.lexsort((rowids[top], -scores[top]))]
        return [(str(rowids[i]), float(scores[i])) for i in top if np.isfinite(scores[i])]

    def _load_matrix(self, conn: sqlite3.Connection) -> tuple[Any, Any]:
        import numpy as np

        rows = conn.execute(
            "SELECT rowid, embedding FROM chunks WHERE embedding IS NOT NULL ORDER BY rowid"
        ).fetchall()
        dims = self.embedder.dimensions if self.embedder else 0
        matrix = np.frombuffer(b"".join(b for _, b in rows), dtype=np.float32)
        return (
            np.asarray([r for r, _ in rows], dtype=np.int64),
            matrix.reshape(len(rows), dims) if rows else np.zeros((0, dims), np.float32),
        )

    async def _chunks(self, keys: list[str]) -> dict[str, StoredChunk]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT c.rowid, c.id, c.document_id, c.text, c.tokens, c.heading, "
                "d.metadata FROM chunks c JOIN documents d ON d.id = c.document_id "
                f"WHERE c.rowid IN ({','.join('?' * len(keys))})",
                [int(key) for key in keys],
            ).fetchall()
        )
        return {
            str(rowid): StoredChunk(cid, doc_id, text, tokens, heading, json.loads(meta))
            for rowid, cid, doc_id, text, tokens, heading, meta in rows
        }

    async def stats(self) -> IndexStats:
        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT d.id, d.title, d.metadata, d.indexed_at, count(c.rowid), "
                "coalesce(sum(c.tokens), 0) FROM documents d LEFT JOIN chunks c "
                "ON c.document_id = d.id GROUP BY d.id ORDER BY d.id"
            ).fetchall()
            return [
                {
                    "id": i,
                    "title": t,
                    "metadata": json.loads(m),
                    "indexed_at": at,
                    "chunks": n,
                    "tokens": tok,
                }
                for i, t, m, at, n, tok in rows
            ]

        return IndexStats(
            url=self.url,
            vectors=self.vectors,
            embedder=self.embedder.name if self.embedder else None,
            documents=await self._run(read),
        )
