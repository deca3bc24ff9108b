"""Limits on what the runtime accepts from a model or a tool (checked before any append).

Whatever is accepted must load and render: JSON nested deeper than `MAX_DEPTH`, strings
with lone surrogates (not encodable as UTF-8), and non-finite numbers (`NaN`, `Infinity`,
`1e400`: JSON cannot store them, so the log would not say what ran) are refused with a
clear reason before anything is written. Parsing counts the nesting *before* `json.loads`
recurses, so a hostile `"[" * 100_000` is a reason, never a `RecursionError`.

Every string echoed back to the model (an unknown tool name, a bad output) is cut by
`clip` to a bounded length. A tool's result becomes JSON values within the limits through
`stored_result`, or is refused.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel

__all__ = [
    "MAX_DEPTH",
    "MAX_ECHO",
    "BoundsError",
    "check_value",
    "clip",
    "flat_scalars",
    "parse_json",
    "scrub_text",
    "stored_result",
]

MAX_DEPTH = 64
"""Deepest JSON nesting accepted in model output, tool arguments and tool results."""

MAX_ECHO = 200
"""Longest piece of untrusted text quoted back in a reason."""


class BoundsError(ValueError):
    """A value is outside the limits; the message says which and where."""


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """`text` cut to `limit` characters (with a marker saying how much was cut)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit:,} more characters]"


def _depth(text: str) -> int:
    """The deepest bracket nesting of JSON text (brackets inside strings not counted)."""
    deepest = depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _reject_constant(name: str) -> Any:
    raise BoundsError(f"{name} is not a finite number")


def parse_json(text: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads(text)` within the limits.

    Raises:
        BoundsError: nested deeper than `max_depth`, a non-finite number, a lone surrogate.
        ValueError: not valid JSON.
    """
    # Nesting can only pass the limit if there are more opening brackets than that: the
    # character walk (Python, O(text)) runs only for text with that many.
    openers = text.count("[") + text.count("{") if len(text) > max_depth else 0
    depth = _depth(text) if openers > max_depth else 0
    if depth > max_depth:
        raise BoundsError(f"JSON nested {depth} levels deep (the limit is {max_depth})")
    if text.startswith("\ufeff"):  # as json.loads refuses it
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    # The walk over the value runs only when the text can hold something it refuses: a
    # lone surrogate needs non-ASCII text or a \u escape, nesting past the limit more
    # openers than the limit; a number overflowing to inf stops the parse (the walk of a
    # second parse then says where it is).
    walk = openers > max_depth or not text.isascii() or "\\u" in text
    try:
        value = _decode(text)
    except _NotFinite:
        value, walk = json.loads(text, parse_constant=_reject_constant), True
    if walk:
        check_value(value, max_depth=max_depth)
    return value


class _NotFinite(ValueError):
    """A number literal JSON text holds that no float can (`1e400`)."""


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise _NotFinite(literal)
    return number


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
"""Shared: `json.loads` with a hook builds a decoder and its scanner per call."""


def _decode(text: str) -> Any:
    """`_DECODER.decode(text)`, without its two whitespace matches when the JSON value
    spans the whole text (the common case: a model's answer is stripped first)."""
    try:
        value, end = _DECODER.raw_decode(text)
    except _NotFinite:
        raise
    except ValueError:  # leading whitespace, or not JSON: decode's own answer or error
        return _DECODER.decode(text)
    return value if end == len(text) else _DECODER.decode(text)


_Path = str | tuple[Any, str | int]
"""Where a value sits: the root's name, or (the parent's path, a key or an index)."""


def _spell(path: _Path) -> str:
    """`value.a[2].b`: keys cut to 40 characters."""
    parts: list[str] = []
    while isinstance(path, tuple):
        path, step = path
        parts.append(f"[{step}]" if isinstance(step, int) else f".{clip(step, 40)}")
    return path + "".join(reversed(parts))


def check_value(value: Any, *, max_depth: int = MAX_DEPTH, where: str = "value") -> None:
    """Check a JSON-like value without recursion.

    Raises:
        BoundsError: nested deeper than `max_depth`, a non-finite float, or a string (or
            key) holding a lone surrogate.
    """
    if type(value) is dict and max_depth > 0 and flat_scalars(value):
        return  # the common case (a call's arguments, a record): one level of scalars
    # Paths are (parent, key) links, spelled out only for an error: a check that passes
    # builds no strings. ASCII text cannot hold a surrogate, so only other text is encoded.
    stack: list[tuple[Any, int, _Path]] = [(value, 0, where)]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                _check_text(item, path)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise BoundsError(f"{_spell(path)} is {item!r}, not a finite number")
        elif isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                raise BoundsError(f"{_spell(path)} is nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for k, v in item.items():
                    key = k if isinstance(k, str) else str(k)
                    if not key.isascii():
                        _check_text(key, path)
                    stack.append((v, depth + 1, (path, key)))
            else:
                stack.extend((v, depth + 1, (path, i)) for i, v in enumerate(item))


def flat_scalars(value: dict[Any, Any]) -> bool:
    """Whether `value` holds only ASCII keys and scalars that `check_value` accepts, and so
    passes it (False: it may still pass; the walk decides, and says where it fails)."""
    for key, item in value.items():
        if type(key) is not str or not key.isascii():
            return False
        kind = type(item)
        if kind is str:
            if not item.isascii():
                return False
        elif kind is float:
            if not math.isfinite(item):
                return False
        elif not (kind is int or kind is bool or item is None):
            return False
    return True


def _check_text(text: str, path: _Path) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BoundsError(
            f"{_spell(path)} holds a lone surrogate at character {exc.start} (not valid Unicode)"
        ) from None


_SURROGATE = re.compile("[\ud800-\udfff]")


def scrub_text(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD (raw output kept as evidence)."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def stored_result(value: Any, *, where: str = "result") -> Any:
    """A tool's result as JSON values (pydantic models dumped, datetimes in ISO 8601, sets
    and tuples as lists), checked against the limits.

    Raises:
        BoundsError: outside the limits (see `check_value`).
        TypeError: a value JSON cannot hold.
        ValueError: a structure JSON cannot hold (a cycle).
    """
    kind = type(value)
    if kind is str or kind is float or kind is bool or value is None or _small_int(value):
        check_value(value, where=where)  # a plain scalar: no JSON round trip to copy it
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    else:
        value = json.loads(json.dumps(value, default=_json_default))
    check_value(value, where=where)
    return value


def _small_int(value: Any) -> bool:
    """An exact int JSON holds as is (a huge one goes the long way, whose error says why)."""
    return type(value) is int and -(2**63) <= value < 2**63


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
