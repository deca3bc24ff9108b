"""Counting tokens with an OpenAI-compatible server's own tokenizer.

llama-cpp-python's server answers `POST /extras/tokenize/count` (`{"input": text, "model":
alias}` -> `{"count": n}`) with the served model's tokenizer, the one its
`usage.prompt_tokens` is counted with. `OpenAIModel` declares a `ServerTokenizer` as its
profile's tokenizer when its server kind has such an endpoint (`OpenAIServer.count_path`),
so budgets, `threadline render` and `threadline profile` count what the server counts.

A count the server does not give (it is down, or busy with a generation past `timeout`: its
endpoints share one lock, or it answers something else) is `ceil(utf8 bytes / 3)`, the
deliberate overestimate `context.tokens.ApproxCounter` makes for unknown tokenizers: a
budget may waste room but never overflows. The first such failure is logged. After a
failure the server is not asked again for `rest` seconds (the counts meanwhile are the
overestimate): a render counts many texts, and while the server generates each of them
would wait the whole timeout (5 s each, measured on llama-cpp-python 0.3.36).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
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
        rest: seconds after a failure during which the server is not asked (approximated).
        clock: monotonic seconds (tests pass their own).

    Invariants:
        * never raises for a server's failure: the count is approximated instead;
        * after a failure, no request for `rest` seconds;
        * one HTTP client per tokenizer, made on the first count and shared by threads.
    """

    def __init__(
        self,
        url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 5.0,
        *,
        rest: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.model = model
        self.timeout = timeout
        self.rest = rest
        self._clock = clock
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client: Any = None
        self._lock = threading.Lock()
        self._warned = False
        self._resting_until = -math.inf

    def __call__(self, text: str) -> int:
        if not text:
            return 0
        if self._clock() < self._resting_until:  # it failed lately: not asked meanwhile
            return _overestimate(text)
        try:
            reply = self._http().post(
                self.url, json={"input": text, "model": self.model}, headers=self._headers
            )
            reply.raise_for_status()
            return int(reply.json()["count"])
        except Exception as exc:  # any failure: the overestimate, never a failed render
            self._resting_until = self._clock() + self.rest
            if not self._warned:
                self._warned = True
                log.warning(
                    "%s: no token count (%s: %s); counting ceil(bytes / 3) instead, "
                    "asking again after %g s",
                    self.url,
                    type(exc).__name__,
                    exc,
                    self.rest,
                )
            return _overestimate(text)

    def _http(self) -> Any:
        with self._lock:
            if self._client is None:
                import httpx

                self._client = httpx.Client(timeout=self.timeout)
            return self._client


def _overestimate(text: str) -> int:
    """`ceil(utf8 bytes / 3)`: `context.tokens.ApproxCounter`'s count."""
    return math.ceil(len(text.encode("utf-8")) / 3)
