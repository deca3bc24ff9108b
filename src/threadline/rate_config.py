"""Rate limits as configuration: `Rate` and `RateLimits`, pure data.

The agent holds its limits (`Agent(rate_limits=...)`), so this module imports nothing of
stores, models or the network: `decide` and everything it imports stay pure
(tests/test_reducer.py). Keeping the limits is `threadline.ratelimits`' work.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from .errors import ConfigError

__all__ = ["Kind", "Rate", "RateLimits"]

Kind = Literal["model", "tokens", "tool"]

_MAX_CALLS = 100_000
"""The most calls per interval a limit may name: a call limit keeps a row per call."""
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*(s|m|min|h)?\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    """`limit` calls (or tokens) per `per` seconds."""

    limit: int
    per: float = 60.0

    def __post_init__(self) -> None:
        if self.limit < 1 or self.per <= 0:
            raise ConfigError(f"a rate needs a limit of at least 1 per a positive time: {self}")

    @classmethod
    def parse(cls, text: str) -> Rate:
        """`5/2s`, `500/1m`, `500/min`, `10/s`, `3600/1h` (a bare number: seconds)."""
        found = _RATE.match(text)
        if found is None:
            raise ConfigError(f"rate {text!r} is not LIMIT/INTERVAL, e.g. 5/2s or 500/1m")
        count, amount, unit = found.groups()
        return cls(int(count), float(amount or 1) * _UNITS[unit or ""])


@dataclass(frozen=True)
class RateLimits:
    """The limits to keep, by provider or model id and by tool name.

    Attributes:
        models: model calls per interval, by provider (`openai`) or model id.
        tokens: tokens (input and output) per interval, by provider or model id.
        tools: runs per interval, by tool name.
        hold: seconds a call in flight keeps its slot at most: a process that dies
            mid-call gives the slot back after this (plus the interval).
    """

    models: Mapping[str, Rate] = field(default_factory=dict)
    tokens: Mapping[str, Rate] = field(default_factory=dict)
    tools: Mapping[str, Rate] = field(default_factory=dict)
    hold: float = 300.0

    def __post_init__(self) -> None:
        for name, rate in [*self.models.items(), *self.tools.items()]:
            if rate.limit > _MAX_CALLS:
                per_second = -(-rate.limit // max(1, int(rate.per)))
                raise ConfigError(
                    f"rate limit {name}: {rate.limit} calls per {rate.per:g}s would keep as "
                    f"many rows; state it per a shorter interval (e.g. {per_second}/1s)"
                )
        if self.hold <= 0:
            raise ConfigError(f"RateLimits.hold must be positive, not {self.hold}")

    def __bool__(self) -> bool:
        return bool(self.models or self.tokens or self.tools)

    @classmethod
    def parse(cls, text: str) -> RateLimits:
        """`KIND:NAME=RATE` entries separated by commas, semicolons or spaces; KIND is
        `model`, `tokens` or `tool` (see the module docstring)."""
        tables: dict[str, dict[str, Rate]] = {"model": {}, "tokens": {}, "tool": {}}
        for entry in re.split(r"[,;\s]+", text.strip()):
            if not entry:
                continue
            name, eq, rate = entry.rpartition("=")
            kind, colon, target = name.partition(":")
            if not eq or not colon or not target or kind not in tables:
                raise ConfigError(
                    f"rate limit {entry!r} is not KIND:NAME=RATE with KIND model, tokens or "
                    "tool (e.g. model:openai=500/1m)"
                )
            tables[kind][target] = Rate.parse(rate)
        return cls(tables["model"], tables["tokens"], tables["tool"])

    def over(self, base: RateLimits) -> RateLimits:
        """These limits, and `base`'s for the names these do not set."""
        return RateLimits(
            {**base.models, **self.models},
            {**base.tokens, **self.tokens},
            {**base.tools, **self.tools},
            self.hold,
        )

    def find(self, kind: Kind, name: str) -> tuple[str, Rate] | None:
        """The limit (its store key and rate) of a model id or tool name, if any."""
        if kind == "tool":
            rate = self.tools.get(name)
            return None if rate is None else (f"tool:{name}", rate)
        table = self.models if kind == "model" else self.tokens
        first = name.split(",")[0]  # a fallback chain: its first model
        for candidate in (first, first.partition(":")[0]):
            rate = table.get(candidate)
            if rate is not None:
                return f"{kind}:{candidate}", rate
        return None
