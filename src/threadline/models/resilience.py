"""Surviving flaky providers: timeouts, retries with backoff, circuit breakers, fallbacks.

These wrap any `Model`, so every backend gets the same behaviour and the provider SDKs'
own retries stay off (one layer retries, and it is the one that counts attempts):

    ResilientModel(model, RetryPolicy(), CircuitBreaker("openai"))
    FallbackModel([primary, secondary])

Contract: a wrapped call either returns a `ModelOutput` or raises `ModelError` (with
`attempts` set), whatever the backend did: a timeout, a connection error, a 429 or 5xx
that outlasts the retries, or a bug. The runtime records that error as a `model_error`
event, so a failing provider never crashes the loop.

Retries happen only for `ModelError.retryable` failures (429, 5xx, timeouts, connection
errors). A request the provider calls invalid (`InvalidRequest`: 400, 404, 413, 422, or a 5xx
whose body is a validation message, see `is_invalid_request`) is never retried: the same
bytes cannot succeed. An open breaker raises `CircuitOpen`, which the runtime turns into a
durable wait until the breaker's next trial time (`threadline.waits.breaker_wait`), not an
error. The wait before attempt n+1 is the provider's `Retry-After` when it sent one, else
"full jitter" exponential backoff: uniform(0, min(max_delay, base_delay * 2**(n-1))), which
spreads the retries of many workers instead of having them hammer a recovering provider in
lockstep. Sleeping and randomness are injectable so tests never wait.

`CircuitBreaker` and the backoff live in `threadline.resilience`, shared with the tools'
retries and breakers; one breaker is shared by every model of the same provider that
`resolve_model` builds in one call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from ..errors import CircuitOpen, ConfigError, InvalidRequest, ModelError
from ..events import RawToolCall
from ..resilience import CircuitBreaker, backoff
from .base import Context, Model, ModelOutput, ModelProfile
from .pricing import PriceTable

__all__ = [
    "CircuitBreaker",
    "FallbackModel",
    "ResilientModel",
    "RetryPolicy",
    "breakers_of",
    "is_invalid_request",
    "is_retryable_status",
    "parse_retry_after",
    "sdk_api_key",
    "sdk_client",
    "sdk_model_error",
    "sdk_output",
    "sdk_request",
]

Sleep = Callable[[float], Awaitable[None]]
_Client = TypeVar("_Client")
_Response = TypeVar("_Response")


def is_retryable_status(status: int) -> bool:
    """429, 408, 409 and 5xx (including Anthropic's 529 "overloaded") are worth retrying."""
    return status in (408, 409, 429) or status >= 500


_INVALID_STATUSES = frozenset({400, 404, 413, 422})
# What servers put in the body of a 5xx that is really a rejected request: llama-cpp-python's
# server answers FastAPI/pydantic validation failures with HTTP 500.
_VALIDATION_MESSAGE = re.compile(
    r"validation error|literal_error|input should be|field required|extra inputs are not "
    r"permitted|unexpected keyword argument|invalid request",
    re.IGNORECASE,
)


def is_invalid_request(status: int, message: str) -> bool:
    """Whether an HTTP error says the request itself is invalid (so retrying cannot help).

    400, 404 (unknown model or route), 413 and 422 always do; a 5xx does when its message is
    recognisably a request-validation error. 401/403/408/409/429 do not: those are about
    credentials or load, not the request.
    """
    if status in _INVALID_STATUSES:
        return True
    return status >= 500 and bool(_VALIDATION_MESSAGE.search(message))


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` (seconds or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def sdk_model_error(sdk: Any, exc: Exception, model: str) -> ModelError:
    """Map an exception of the `openai` or `anthropic` SDK to a `ModelError` that says
    whether a retry could help (`InvalidRequest` when the same request would fail again).

    Both SDKs are generated from one template and share these exception classes:
    `APITimeoutError`, `APIConnectionError`, `APIStatusError` (with `status_code`, `body`
    and `response`); anything else is a 2xx whose body is not what the API promises.
    """
    if isinstance(exc, sdk.APITimeoutError):
        return ModelError(f"{model}: request timed out", retryable=True)
    if isinstance(exc, sdk.APIConnectionError):
        return ModelError(f"{model}: connection failed: {exc}", retryable=True)
    if isinstance(exc, sdk.APIStatusError):
        status = exc.status_code
        detail = _error_detail(exc)
        if is_invalid_request(status, detail):
            return InvalidRequest(f"{model}: HTTP {status}: {detail}", status=status)
        return ModelError(
            f"{model}: HTTP {status}: {detail}",
            retryable=is_retryable_status(status),
            status=status,
            retry_after=parse_retry_after(exc.response.headers),
        )
    return ModelError(f"{model}: malformed response: {_error_detail(exc)}", retryable=True)


async def sdk_request(
    sdk: Any, model: str, send: Callable[[], Awaitable[_Response]]
) -> tuple[_Response, float]:
    """Send one request through the `openai` or `anthropic` SDK (`sdk`, the module): its
    response and latency in milliseconds.

    Raises:
        ModelError: the SDK's error mapped by `sdk_model_error`; any other exception (e.g.
            a body that is not JSON at all) as a retryable unreadable response.
    """
    started = time.perf_counter()
    try:
        response = await send()
    except sdk.APIError as exc:
        raise sdk_model_error(sdk, exc, model) from exc
    except Exception as exc:
        raise ModelError(
            f"{model}: unreadable response ({type(exc).__name__}: {exc})",
            retryable=True,
        ) from exc
    return response, (time.perf_counter() - started) * 1000


def sdk_output(
    provider: str,
    answered_by: str,
    prices: PriceTable,
    text: str,
    tool_calls: tuple[RawToolCall, ...],
    latency_ms: float,
    *,
    input_tokens: int,
    output_tokens: int,
    cache_write: int,
    cache_read: int,
    cache_write_1h: int = 0,
) -> ModelOutput:
    """An `openai` or `anthropic` SDK response as a `ModelOutput`: recorded as
    `provider:answered_by` (the model the response names, a dated snapshot included),
    priced by `prices` under that name (None for a model without a row), the latency in
    ms to three decimals. `input_tokens` is the whole prompt; `cache_write` and
    `cache_read` are the parts of it the provider's prompt cache wrote and read, and
    `cache_write_1h` the part of the writes made 1-hour entries."""
    cost = prices.cost(
        answered_by,
        input_tokens,
        output_tokens,
        cache_write=cache_write,
        cache_read=cache_read,
        cache_write_1h=cache_write_1h,
    )
    return ModelOutput(
        text=text,
        tool_calls=tool_calls,
        model=f"{provider}:{answered_by}",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost,
        latency_ms=round(latency_ms, 3),
        cache_write_tokens=cache_write,
        cache_read_tokens=cache_read,
        cache_write_1h_tokens=cache_write_1h,
    )


def sdk_api_key(given: str | None, variable: str, hint: str | None) -> str:
    """The API key an `openai` or `anthropic` SDK client is built with: `given`, else the
    environment variable `variable`.

    Args:
        hint: what to do when neither is set (the `ConfigError` says it after
            "`variable` is not set; "), or None when the server needs no key: then a
            placeholder, since both SDKs insist on one.

    Raises:
        ConfigError: no key, and `hint` is not None.
    """
    key = given or os.environ.get(variable)
    if key:
        return key
    if hint is not None:
        raise ConfigError(f"{variable} is not set; {hint}")
    return "not-needed"  # servers that need no key ignore it


def sdk_client(
    client_class: Callable[..., _Client],
    api_key: str,
    base_url: str | None,
    *,
    timeout: float,
    http_client: Any,
) -> _Client:
    """A client of the `openai` or `anthropic` SDK (one constructor: both are generated from
    one template) with the SDK's own retries off: `ResilientModel` is the layer that retries
    and counts the attempts."""
    return client_class(
        api_key=api_key,
        base_url=base_url,
        timeout=timeout,
        max_retries=0,
        http_client=http_client,
    )


def _error_detail(exc: Exception) -> str:
    """The provider's own message (`{"error": {"message": ...}}`), at most 300 characters."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        return json.dumps(body)[:300]
    return str(exc)[:300]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try one model call.

    Attributes:
        max_attempts: total requests per call, including the first (1 = no retries).
        base_delay / max_delay: the exponential backoff envelope, in seconds.
        timeout: seconds allowed per attempt (None: wait for ever; the SDKs have their own).
        max_retry_after: a `Retry-After` longer than this is not waited out: the call fails
            now (retryable) and the thread records it, rather than holding a worker for
            minutes.
    """

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 20.0
    timeout: float | None = 60.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("RetryPolicy.max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ConfigError("RetryPolicy delays must not be negative")

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float | None:
        """Seconds to wait after failed attempt `attempt` (1-based); None means give up."""
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            # A little jitter on top of the provider's wait so a fleet does not return at once.
            return max(0.0, retry_after) + rng.uniform(0, min(1.0, self.base_delay))
        return backoff(attempt, self.base_delay, self.max_delay, rng)

    def wait_after(self, error: ModelError, attempt: int, rng: random.Random) -> float | None:
        """Seconds to wait before retrying a request whose attempt `attempt` (1-based) failed
        with `error`; None means raise it: not retryable, the attempts are spent, or the
        provider's `Retry-After` is beyond `max_retry_after`."""
        if not error.retryable or attempt >= self.max_attempts:
            return None
        return self.delay(attempt, error.retry_after, rng)

    async def run(
        self,
        attempt: Callable[[], Awaitable[_Response]],
        *,
        sleep: Sleep,
        rng: random.Random,
        gate: Callable[[], None] | None = None,
    ) -> _Response:
        """`attempt()` again and again until it returns, waiting `wait_after` between
        tries: the one retry loop of a model call (`ResilientModel`) and of an embedding
        request (`OpenAIEmbedder`). `gate` is asked before each try (a circuit breaker's
        `check`); what it raises is raised at once.

        Raises:
            ModelError: the last try's, with `attempts` set to how many were made; or the
                gate's (e.g. `CircuitOpen`), with `attempts` the tries made before it.
        """
        attempts = 0
        while True:
            if gate is not None:
                try:
                    gate()
                except ModelError as closed:
                    closed.attempts = attempts
                    raise
            attempts += 1
            try:
                return await attempt()
            except ModelError as error:
                wait = self.wait_after(error, attempts, rng)
                if wait is None:
                    error.attempts = attempts
                    raise
            await sleep(wait)


class ResilientModel:
    """A model with per-attempt timeouts, retries and an optional circuit breaker.

    `model_id` is the wrapped model's: the wrapper is invisible in recorded events.
    """

    def __init__(
        self,
        model: Model,
        policy: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.model = model
        self.policy = policy or RetryPolicy()
        self.breaker = breaker
        self._sleep = sleep
        self._rng = rng or random.Random()  # jitter, not cryptography

    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def profile(self) -> ModelProfile:
        return self.model.profile

    async def request(self, context: Context) -> ModelOutput:
        gate = self.breaker.check if self.breaker is not None else None
        return await self.policy.run(
            partial(self._attempt, context), sleep=self._sleep, rng=self._rng, gate=gate
        )

    async def _attempt(self, context: Context) -> ModelOutput:
        """One request, any failure raised as a `ModelError` and recorded by the breaker."""
        try:
            out = await asyncio.wait_for(self.model.request(context), self.policy.timeout)
        except TimeoutError:
            error = ModelError(
                f"{self.model_id}: no answer within {self.policy.timeout:g}s",
                retryable=True,
            )
        except ModelError as exc:
            error = exc
        except Exception as exc:  # a backend bug still ends as a ModelError
            error = ModelError(f"{self.model_id}: {type(exc).__name__}: {exc}")
        except BaseException:  # cancelled (shutdown): no verdict on the provider
            if self.breaker is not None:
                self.breaker.abandon()
            raise
        else:
            if self.breaker is not None:
                self.breaker.record_success()
            return out
        if self.breaker is not None:
            if error.retryable:
                self.breaker.record_failure()
            else:
                self.breaker.record_success()  # the provider answered; it is healthy
        raise error


class FallbackModel:
    """Try each model in order; the first answer wins.

    A model is skipped on any `ModelError` (each one should already be a `ResilientModel`
    with its own retries). The answering model's id is recorded in `ModelOutput.model`.
    If every model fails, the last error is raised, its message naming every failure.
    """

    def __init__(self, models: Sequence[Model]) -> None:
        if not models:
            raise ConfigError("FallbackModel needs at least one model")
        self.models = list(models)

    @property
    def model_id(self) -> str:
        return ",".join(m.model_id for m in self.models)

    @property
    def profile(self) -> ModelProfile:
        """What every model of the chain can serve (`ModelProfile.narrowest`)."""
        return ModelProfile.narrowest(m.profile for m in self.models)

    async def request(self, context: Context) -> ModelOutput:
        failures: list[str] = []
        attempts = 0
        last = ModelError("no model was tried")
        open_circuits: list[CircuitOpen] = []
        for model in self.models:
            try:
                out = await model.request(context)
            except ModelError as exc:
                failures.append(f"{model.model_id}: {exc}")
                attempts += exc.attempts
                last = exc
                if isinstance(exc, CircuitOpen):
                    open_circuits.append(exc)
                continue
            return out if out.model else dataclasses.replace(out, model=model.model_id)
        if open_circuits and len(open_circuits) == len(self.models):
            # Every provider is cooling down: wait for the first one to allow a trial.
            soonest = min(open_circuits, key=lambda e: e.retry_after or 0.0)
            providers = ",".join(e.provider for e in open_circuits)
            error: ModelError = CircuitOpen(providers, soonest.retry_after or 0.0)
            error.attempts = attempts
            raise error
        error = ModelError(
            "every model in the fallback chain failed: " + " | ".join(failures),
            retryable=last.retryable,
            status=last.status,
            attempts=attempts,
        )
        raise error


def breakers_of(models: Iterable[Model | None]) -> list[CircuitBreaker]:
    """The circuit breakers inside these models (through resilient and fallback wrappers),
    each once, in the order found."""
    found: list[CircuitBreaker] = []
    todo = [m for m in models if m is not None]
    while todo:
        model = todo.pop(0)
        if isinstance(model, ResilientModel):
            if model.breaker is not None and all(b is not model.breaker for b in found):
                found.append(model.breaker)
            todo.append(model.model)
        elif isinstance(model, FallbackModel):
            todo.extend(model.models)
    return found
