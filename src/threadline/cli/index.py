"""Retrieval index commands (THREADLINE_RETRIEVAL, THREADLINE_EMBEDDINGS).

threadline index add PATH... [--meta key=value]... [--prune]   only changes are re-embedded
threadline index search QUERY [-k N] [--mode hybrid|lexical|vector] [--filter key=value]...
threadline index list [--json]
threadline index remove ID...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import ConfigError
from .common import app, command, console, run_async, settings

if TYPE_CHECKING:
    from ..retrieval import Retriever

__all__ = ["index_app"]

index_app = typer.Typer(
    help="The retrieval index: add, search, list, remove.", no_args_is_help=True
)
app.add_typer(index_app, name="index")

IndexOpt = Annotated[
    str | None, typer.Option("--index", help="Index URL (default: THREADLINE_RETRIEVAL).")
]
EmbeddingsOpt = Annotated[
    str | None,
    typer.Option("--embeddings", help="local, openai:MODEL or none (THREADLINE_EMBEDDINGS)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]

_BATCH = 8
"""Files per upsert: the progress bar advances per batch, and each batch commits."""


def _open(index: str | None, embeddings: str | None) -> Retriever:
    from ..retrieval import open_retriever

    cfg = settings()
    return open_retriever(index or cfg.retrieval, embeddings=embeddings or cfg.embeddings)


def _pairs(values: list[str] | None, option: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option} takes key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


@command(index_app, "add")
def add(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories to index.")],
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="key=value metadata (repeatable).")
    ] = None,
    prune: Annotated[
        bool,
        typer.Option("--prune", help="Also remove indexed files under PATHs that are gone."),
    ] = False,
    index: IndexOpt = None,
    embeddings: EmbeddingsOpt = None,
) -> None:
    """Index Markdown, text, HTML and PDF files; unchanged chunks are not embedded again."""
    from ..retrieval import UpsertReport
    from ..retrieval.loaders import iter_files, load_document

    files = list(iter_files(paths))
    metadata = _pairs(meta, "--meta")

    async def go() -> UpsertReport:
        total = UpsertReport()
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        async with _open(index, embeddings) as retriever:
            with Progress(*columns, console=console, transient=False) as progress:
                task = progress.add_task("indexing", total=len(files))
                for start in range(0, len(files), _BATCH):
                    batch = files[start : start + _BATCH]
                    progress.update(task, description=f"indexing {escape(batch[0].name)}")
                    docs = [load_document(f, metadata=metadata) for f in batch]
                    total = total.merge(await retriever.upsert(docs))
                    progress.advance(task, len(batch))
                progress.update(task, description="indexed")
            if prune:
                present = {f.as_posix() for f in files}
                dirs = [p.as_posix().rstrip("/") + "/" for p in paths if p.is_dir()]
                gone = [
                    d["id"]
                    for d in (await retriever.stats()).documents
                    if d["id"] not in present and any(d["id"].startswith(x) for x in dirs)
                ]
                pruned.extend(gone)
                await retriever.delete(gone)
        return total

    pruned: list[str] = []
    r = run_async(go())
    console.print(
        f"{r.documents} files: {r.documents - r.unchanged_documents} changed, "
        f"{r.unchanged_documents} unchanged; chunks {r.added_chunks} embedded, "
        f"{r.kept_chunks} kept, {r.deleted_chunks} deleted"
        + (f"; pruned {len(pruned)} missing files" if prune else ""),
        highlight=False,
    )


@command(index_app, "search")
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", help="How many chunks.")] = 5,
    mode: Annotated[str, typer.Option(help="hybrid, lexical or vector.")] = "hybrid",
    filter: Annotated[
        list[str] | None, typer.Option("--filter", help="key=value on metadata (repeatable).")
    ] = None,
    index: IndexOpt = None,
    embeddings: EmbeddingsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The best chunks for a query, best first."""
    if mode not in ("hybrid", "lexical", "vector"):
        raise ConfigError(f"--mode must be hybrid, lexical or vector, not {mode!r}")

    async def go() -> list[Any]:
        async with _open(index, embeddings) as retriever:
            return await retriever.search(
                query,
                k=k,
                filter=_pairs(filter, "--filter") or None,
                mode=mode,  # type: ignore[arg-type]
            )

    hits = run_async(go())
    if as_json:
        console.print_json(json.dumps([h.model_dump() for h in hits]))
        return
    for n, h in enumerate(hits, 1):
        console.rule(
            f"{n}. {escape(h.document_id)}  score {h.score:.4f}  {h.tokens} tokens  "
            f"[dim]{h.chunk_id}[/]",
            align="left",
        )
        console.print(escape(h.text), highlight=False)
    if not hits:
        console.print("no matches")


@command(index_app, "list")
def list_documents(
    index: IndexOpt = None, embeddings: EmbeddingsOpt = None, as_json: JsonOpt = False
) -> None:
    """Documents in the index with their chunk and token counts."""

    async def go() -> Any:
        async with _open(index, embeddings) as retriever:
            return await retriever.stats()

    stats = run_async(go())
    if as_json:
        console.print_json(stats.model_dump_json())
        return
    mode = f"hybrid ({stats.embedder})" if stats.vectors else "lexical only"
    table = Table("document", "chunks", "tokens", "indexed at", title=f"{stats.url}: {mode}")
    for d in stats.documents:
        table.add_row(escape(d["id"]), str(d["chunks"]), str(d["tokens"]), d["indexed_at"][:19])
    console.print(table)


@command(index_app, "remove")
def remove(
    ids: Annotated[list[str], typer.Argument(help="Document ids (as `index list` shows).")],
    index: IndexOpt = None,
    embeddings: EmbeddingsOpt = None,
) -> None:
    """Remove documents and their chunks."""

    async def go() -> int:
        async with _open(index, embeddings) as retriever:
            return await retriever.delete(ids)

    n = run_async(go())
    console.print(f"removed {n} of {len(ids)} documents")
    if n < len(ids):
        raise typer.Exit(1)
