"""OpenAIEmbedder against a real OpenAI-compatible `/embeddings` server on loopback.

The server (FastAPI under uvicorn, in a thread) answers with vectors from the local
MiniLM model, so the index built through HTTP must rank exactly like the local one. It
also answers 429 (with `Retry-After`), 503 and 400 on request, to check that the embedder
retries and classifies errors as the chat models do (`threadline.models.resilience`)."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from threadline.errors import InvalidRequest, ModelError
from threadline.models.resilience import RetryPolicy
from threadline.retrieval import Document, LocalEmbedder, OpenAIEmbedder, open_retriever


@pytest.fixture(scope="module")
def server(embedder: LocalEmbedder) -> Iterator[tuple[str, list[dict]]]:
    app = FastAPI()
    seen: list[dict] = []
    calls: Counter[str] = Counter()

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        body = await request.json()
        port = request.client.port if request.client else None
        seen.append({"body": body, "auth": request.headers.get("authorization"), "port": port})
        calls[body["model"]] += 1
        if body["model"].startswith("throttled") and calls[body["model"]] == 1:
            wait = body["model"].removeprefix("throttled-")
            return JSONResponse(
                {"error": {"message": "rate limited"}},
                status_code=429,
                headers={"Retry-After": wait},
            )
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
    # One client for the event loop: every batch and the query over one kept-alive
    # connection, rather than a client (and its TLS context) made per call.
    assert len({s["port"] for s in seen if s["body"]["model"] == "minilm-over-http"}) == 1


class Sleeps:
    """The waits the embedder asked for (it sleeps through this, so tests do not wait)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _embedder(model: str, url: str, sleeps: Sleeps, **kw) -> OpenAIEmbedder:
    policy = RetryPolicy(max_attempts=3, base_delay=0.2, max_retry_after=10)
    return OpenAIEmbedder(
        model, base_url=url, policy=policy, sleep=sleeps, rng=random.Random(7), **kw
    )


def _requests(seen: list[dict], model: str) -> int:
    return sum(1 for s in seen if s["body"]["model"] == model)


async def test_a_429_is_retried_after_its_retry_after(server) -> None:
    url, seen = server
    sleeps = Sleeps()
    rows = await _embedder("throttled-3", url, sleeps).embed(["a", "b"])
    assert rows.shape == (2, 384)
    assert _requests(seen, "throttled-3") == 2
    # The provider's 3 s, plus at most min(1, base_delay) of jitter (as for the models).
    assert len(sleeps.waits) == 1 and 3.0 <= sleeps.waits[0] <= 3.2


async def test_a_retry_after_beyond_the_policy_is_not_waited_out(server) -> None:
    url, seen = server
    sleeps = Sleeps()
    with pytest.raises(ModelError) as throttled:
        await _embedder("throttled-120", url, sleeps).embed(["a"])
    assert throttled.value.retryable and throttled.value.status == 429
    assert throttled.value.retry_after == 120 and throttled.value.attempts == 1
    assert sleeps.waits == [] and _requests(seen, "throttled-120") == 1


async def test_provider_errors_say_whether_to_retry(server) -> None:
    url, seen = server
    sleeps = Sleeps()
    with pytest.raises(ModelError) as busy:
        await _embedder("overloaded", url, sleeps).embed(["x"])
    assert busy.value.retryable and busy.value.status == 503 and busy.value.attempts == 3
    assert _requests(seen, "overloaded") == 3
    assert len(sleeps.waits) == 2 and all(0 <= w <= 0.4 for w in sleeps.waits)  # backoff
    with pytest.raises(InvalidRequest) as bad:
        await _embedder("unknown", url, sleeps).embed(["x"])
    assert not bad.value.retryable and bad.value.status == 400
    assert "no such model" in str(bad.value) and bad.value.attempts == 1
    assert _requests(seen, "unknown") == 1 and len(sleeps.waits) == 2  # not retried
    with pytest.raises(ModelError) as down:
        await _embedder("x", "http://127.0.0.1:9/v1", sleeps, timeout=2).embed(["x"])
    assert down.value.retryable and down.value.attempts == 3
