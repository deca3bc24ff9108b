"""OpenAIEmbedder against a real OpenAI-compatible `/embeddings` server on loopback.

The server (FastAPI under uvicorn, in a thread) answers with vectors from the local
MiniLM model, so the index built through HTTP must rank exactly like the local one. It
also answers 503 and 400 on request, to check the errors the embedder raises."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from threadline.errors import ModelError
from threadline.retrieval import Document, LocalEmbedder, OpenAIEmbedder, open_retriever


@pytest.fixture(scope="module")
def server(embedder: LocalEmbedder) -> Iterator[tuple[str, list[dict]]]:
    app = FastAPI()
    seen: list[dict] = []

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        body = await request.json()
        seen.append({"body": body, "auth": request.headers.get("authorization")})
        if body["model"] == "overloaded":
            return JSONResponse({"error": {"message": "try later"}}, status_code=503)
        if body["model"] == "unknown":
            return JSONResponse({"error": {"message": "no such model"}}, status_code=400)
        rows = embedder.embed_sync(body["input"])
        data = [
            {"object": "embedding", "index": i, "embedding": r.tolist()} for i, r in enumerate(rows)
        ]
        return JSONResponse({"object": "list", "data": data[::-1], "model": body["model"]})

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}/v1", seen
    srv.should_exit = True
    thread.join(10)


async def test_an_index_built_through_http_ranks_like_the_local_one(
    server, embedder: LocalEmbedder, tmp_path: Path
) -> None:
    url, seen = server
    remote = OpenAIEmbedder("minilm-over-http", base_url=url, api_key="k-123", batch_size=2)
    docs = [
        Document(id="bags", text="Each extra checked suitcase costs fifty dollars."),
        Document(id="pets", text="Dogs and cats travel in the cabin in a carrier."),
        Document(id="meals", text="A hot meal is served on long flights."),
    ]
    async with open_retriever(f"sqlite:///{tmp_path / 'r.db'}", embedder=remote) as index:
        await index.upsert(docs)
        remote_hits = await index.search("luggage fee", k=3, mode="vector")
        assert (await index.stats()).embedder == "openai:minilm-over-http"
    async with open_retriever(f"sqlite:///{tmp_path / 'l.db'}", embedder=embedder) as index:
        await index.upsert(docs)
        local_hits = await index.search("luggage fee", k=3, mode="vector")
    assert [h.chunk_id for h in remote_hits] == [h.chunk_id for h in local_hits]
    assert remote_hits[0].document_id == "bags"
    assert [h.score for h in remote_hits] == pytest.approx([h.score for h in local_hits], abs=1e-5)
    assert remote.dimensions == 384
    assert all(s["auth"] == "Bearer k-123" for s in seen)
    assert max(len(s["body"]["input"]) for s in seen) == 2  # batched as asked


async def test_provider_errors_say_whether_to_retry(server) -> None:
    url, _ = server
    with pytest.raises(ModelError) as busy:
        await OpenAIEmbedder("overloaded", base_url=url).embed(["x"])
    assert busy.value.retryable and busy.value.status == 503
    with pytest.raises(ModelError) as bad:
        await OpenAIEmbedder("unknown", base_url=url).embed(["x"])
    assert not bad.value.retryable and "no such model" in str(bad.value)
    with pytest.raises(ModelError) as down:
        await OpenAIEmbedder("x", base_url="http://127.0.0.1:9/v1", timeout=2).embed(["x"])
    assert down.value.retryable
