"""W3C Trace Context: the `traceparent` a thread was launched under, and the trace it joins.

A request that launches a thread may carry a `traceparent` header (the caller's span). The
server's `TraceContextMiddleware` validates it and makes it the request's
`inbound_traceparent()`; the launch stores it in the thread's metadata under
`TRACEPARENT_KEY` (beside the other launch metadata, in the thread row and in the first
event), so every step of the thread, by whichever process or worker advances it, is a child
of that span. A thread launched without one gets a trace id derived from its id.

The format is parsed here, by hand, rather than by OpenTelemetry's propagator: the header
is read on every request, and nothing of OpenTelemetry may be imported unless telemetry is
enabled (extra `otel`). The format is small and fixed (W3C Trace Context, level 1).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass

__all__ = [
    "TRACEPARENT_KEY",
    "TraceParent",
    "inbound_traceparent",
    "parse_traceparent",
    "reset_inbound_traceparent",
    "set_inbound_traceparent",
    "thread_trace_id",
    "trace_parent_of",
]

TRACEPARENT_KEY = "traceparent"
"""The thread metadata key holding the W3C `traceparent` the thread was launched under."""

_TRACEPARENT = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})-"
    r"(?P<flags>[0-9a-f]{2})(?P<rest>-.*)?"
)

_INBOUND: ContextVar[str | None] = ContextVar("threadline_inbound_traceparent", default=None)


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A parsed `traceparent`: the caller's trace id, its span id and trace flags."""

    trace_id: int
    span_id: int
    flags: int

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 0x01)

    def header(self) -> str:
        """The version-00 header value."""
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{self.flags:02x}"


def parse_traceparent(value: str | None) -> TraceParent | None:
    """The parsed header, or None when it is absent or invalid (the spec says: ignore it).

    Invalid: not lowercase hex in the 2-32-16-2 layout, version `ff`, an all-zero trace
    or span id, or a version-00 value with anything after the flags.
    """
    if not value:
        return None
    found = _TRACEPARENT.fullmatch(value.strip())
    if found is None:
        return None
    version, rest = found["version"], found["rest"]
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = int(found["trace"], 16), int(found["span"], 16)
    if trace_id == 0 or span_id == 0:
        return None
    return TraceParent(trace_id, span_id, int(found["flags"], 16))


def thread_trace_id(thread_id: str) -> int:
    """The 128-bit trace id of a thread launched without a `traceparent`."""
    return int.from_bytes(hashlib.sha256(thread_id.encode()).digest()[:16], "big") or 1


def trace_parent_of(thread_id: str, metadata: Mapping[str, object]) -> TraceParent:
    """The span every step of the thread hangs under.

    The stored `traceparent` when the thread was launched with a valid one; otherwise a
    sampled root derived from the thread id, the same in every process.
    """
    raw = metadata.get(TRACEPARENT_KEY)
    stored = parse_traceparent(raw) if isinstance(raw, str) else None
    if stored is not None:
        return stored
    span_id = thread_trace_id(thread_id + "/root") & ((1 << 64) - 1) or 1
    return TraceParent(thread_trace_id(thread_id), span_id, 0x01)


def inbound_traceparent() -> str | None:
    """The valid `traceparent` of the HTTP request being handled, if it carried one."""
    return _INBOUND.get()


def set_inbound_traceparent(value: str | None) -> Token[str | None]:
    """Make `value` the current request's traceparent; returns the token to reset it."""
    return _INBOUND.set(value)


def reset_inbound_traceparent(token: Token[str | None]) -> None:
    _INBOUND.reset(token)
