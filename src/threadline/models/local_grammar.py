"""The intent schema as a llama.cpp grammar (GBNF), for the local model's child process.

Strings and arrays get length bounds in the grammar so a complete intent always fits in
the output budget; raw control characters are excluded because strict JSON forbids them
inside strings. The conversion is llama-cpp-python's own JSON-schema converter, run after
local `$ref`s are inlined; it is imported lazily, so importing this module loads nothing
native (the runtime's process never calls it: the child does).
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from ..errors import ConfigError, MissingExtraError

__all__ = ["MAX_ITEMS", "MAX_ITEMS_EXPLICIT", "MAX_STRING", "bounded_schema", "grammar_text"]

MAX_STRING = 120
"""Longest string the grammar lets the model write (characters)."""
MAX_ITEMS = 6
"""Most items the grammar lets the model put in an array whose schema sets no maxItems."""
MAX_ITEMS_EXPLICIT = 16
"""A schema's own maxItems is kept up to this."""

_CHAR_RULE = re.compile(r"^char ::= .*$", re.M)
_STRICT_CHAR = r'char ::= [^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
_COPIED_AS_SCHEMA = ("items", "additionalProperties", "anyOf", "oneOf", "allOf", "prefixItems")


def bounded_schema(schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A copy of `schema` with local `$ref`s inlined and strings/arrays length-bounded."""
    defs = defs or {}
    if isinstance(schema, list):
        return [bounded_schema(s, defs, depth) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$defs" in schema:
        defs = {**defs, **schema["$defs"]}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = defs.get(ref.rsplit("/", 1)[-1])
        if target is None or depth > 8:  # unknown or deeply recursive: allow any JSON value
            return {}
        return bounded_schema(target, defs, depth + 1)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("$defs", "title", "description", "default", "examples"):
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {k: bounded_schema(v, defs, depth) for k, v in value.items()}
        elif key in _COPIED_AS_SCHEMA:
            out[key] = bounded_schema(value, defs, depth)
        else:
            out[key] = copy.deepcopy(value)
    kind = out.get("type")
    if kind == "string" and not {"enum", "const", "pattern", "format"} & out.keys():
        out["maxLength"] = min(int(out.get("maxLength", MAX_STRING)), MAX_STRING)
    if kind == "array":
        out["maxItems"] = min(int(out.get("maxItems", MAX_ITEMS)), MAX_ITEMS_EXPLICIT)
    return out


def grammar_text(schema: dict[str, Any]) -> str:
    """GBNF accepting exactly the JSON documents valid under `schema` (bounded, see above).

    Raises:
        MissingExtraError: llama-cpp-python is not installed.
        ConfigError: the schema uses something the converter cannot express.
    """
    try:
        from llama_cpp import llama_grammar
    except ImportError:
        raise MissingExtraError("local", "llama_cpp") from None
    prepared = bounded_schema(schema)
    try:
        gbnf = llama_grammar.json_schema_to_gbnf(json.dumps(prepared))
    except Exception as exc:
        raise ConfigError(f"cannot build a grammar from the intent schema: {exc}") from None
    return _CHAR_RULE.sub(lambda _: _STRICT_CHAR, gbnf)
