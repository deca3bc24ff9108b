"""Counting tokens with an OpenAI-compatible server's own tokenizer.

llama-cpp-python's server answers `POST /extras/tokenize/count` (`{"input": text, "model":
alias}` -> `{"count": n}`) with the served model's tokenizer, the one its
`usage.prompt_tokens` is counted with. `OpenAIModel` declares a `ServerTokenizer` as its
profile's tokenizer when its server kind has such an endpoint (`OpenAIServer.count_path`),
so budgets, `threadline render` and `threadline profile` count what the server counts.

A count the server does not give (it is down, or busy with a generation past `timeout`: its
endpoints share one lock, or it answers something else) is `ceil(utf8 bytes / 3)`, the
deliberate overestimate `context.tokens.ApproxCounter` makes for unknown tokenizers: a
budget may waste room but never overflows. The first such failure is logged.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

__all__ = ["ServerTokenizer"]

log = logging.getLogger("threadline.models.openai")


class ServerTokenizer:
    """`text -> tokens` by a server's count endpoint (see the module docstring).

    Args:
        url: the endpoint (`http://host:port/extras/tokenize/count`).
        model: the model alias the server serves (its tokenizer is the one asked).
        api_key: sent as a bearer token when given (a server started with `--api_key`).
        timeout: seconds one count may take before it is approximated.

    Invariants:
        * never raises for a server's failure: the count is approximated instead;
        * one HTTP client per tokenizer, made on the first count and shared by threads.
    """

    def __init__(
        self, url: str, model: str, api_key: str | None = None, timeout: float = 5.0
    ) -> None:
        self.url = url
        self.model = model
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client: Any = None
        self._lock = threading.Lock()
        self._warned = False

    def __call__(self, text: str) -> int:
        if not text:
            return 0
        try:
            reply = self._http().post(
                self.url, json={"input": text, "model": self.model}, headers=self._headers
            )
            reply.raise_for_status()
            return int(reply.json()["count"])
        except Exception as exc:  # any failure: the overestimate, never a failed render
            if not self._warned:
                self._warned = True
                log.warning(
                    "%s: no token count (%s: %s); counting ceil(bytes / 3) instead",
                    self.url,
                    type(exc).__name__,
                    exc,
                )
            return math.ceil(len(text.encode("utf-8")) / 3)

    def _http(self) -> Any:
        with self._lock:
            if self._client is None:
                import httpx

                self._client = httpx.Client(timeout=self.timeout)
            return self._client
