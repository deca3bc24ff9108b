"""BFCL's schema dialect -> JSON Schema, the eval's intent union, and a strict validator.

BFCL writes function parameters in a Python-flavoured dialect: `dict` for object, `float`
for number, `tuple` for array, `any` for "anything" (mapped to string, as BFCL's own
checker treats it), plus a non-standard `optional` flag. `to_json_schema` maps that to
standard JSON Schema with `additionalProperties: false` (BFCL's checker rejects unexpected
parameters, so the schema should too).

`validate` is a deliberately small, strict validator for the subset these schemas use
(type, enum, required, properties, additionalProperties, items, min/max, anyOf/oneOf):
no coercion, booleans are not numbers, and `None` satisfies nothing but `null`. It is
what counts a model's call as "schema-valid", and it is also run over BFCL's gold answers,
a few of which it rejects (None values, enum violations); those are counted, not excused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..models.base import ToolSpec
from ..tools import done_for_now, request_more_information

__all__ = [
    "HUMAN_TOOLS",
    "MAX_CALLS",
    "eval_output_schema",
    "eval_tools",
    "function_spec",
    "to_json_schema",
    "validate",
]

_TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": "string"}
MAX_CALLS = 16
"""The most calls one answer may hold: twice the most any BFCL case wants (8, in
`parallel`). It is a bound at all only so that a grammar-constrained model's answer stays
finite; it must never be what makes a gold answer impossible."""
HUMAN_TOOLS = (request_more_information.name, done_for_now.name)


def to_json_schema(schema: Any) -> Any:
    """Map one BFCL parameter schema (recursively) to JSON Schema."""
    if isinstance(schema, list):
        return [to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "optional":
            continue
        if key == "type":
            out["type"] = (
                [_TYPES.get(v, v) for v in value]
                if isinstance(value, list)
                else _TYPES.get(value, value)
            )
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {k: to_json_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "anyOf", "oneOf"):
            out[key] = to_json_schema(value)
        else:
            out[key] = value
    if out.get("type") == "object":
        out.setdefault("properties", {})
        out.setdefault("additionalProperties", False)
        if "required" in out:
            out["required"] = [r for r in out["required"] if r in out["properties"]]
    return out


def function_spec(function: dict[str, Any]) -> ToolSpec:
    """A BFCL function definition as a `ToolSpec` with a JSON Schema."""
    params = to_json_schema(function.get("parameters") or {"type": "dict", "properties": {}})
    if params.get("type") != "object":
        params = {"type": "object", "properties": {}, "additionalProperties": False}
    return ToolSpec(str(function["name"]), str(function.get("description", "")), params)


def eval_tools(functions: Sequence[dict[str, Any]]) -> tuple[ToolSpec, ...]:
    """The case's functions plus the two human intents (ask a question, finish)."""
    specs = [function_spec(f) for f in functions]
    names = {s.name for s in specs}
    for t in (request_more_information, done_for_now):
        if t.name not in names:
            specs.append(ToolSpec(t.name, t.description, t.schema()))
    return tuple(specs)


def _variant(spec: ToolSpec) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "intent": {"type": "string", "const": spec.name},
            "arguments": spec.parameters,
        },
        "required": ["intent", "arguments"],
        "additionalProperties": False,
    }


def eval_output_schema(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    """One intent (any tool), or a list of function intents (parallel calls).

    The same schema is used for every category, so the model is never told how many calls
    a case expects.
    """
    variants = [_variant(t) for t in tools]
    functions = [_variant(t) for t in tools if t.name not in HUMAN_TOOLS]
    alternatives: list[dict[str, Any]] = list(variants)
    if functions:
        alternatives.append(
            {"type": "array", "items": {"oneOf": functions}, "minItems": 1, "maxItems": MAX_CALLS}
        )
    return {"oneOf": alternatives}


def validate(value: Any, schema: Any, path: str = "$") -> list[str]:
    """Every way `value` violates `schema` (empty means valid). Strict: no coercion."""
    if not isinstance(schema, dict) or not schema:
        return []
    errors: list[str] = []
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema.get("oneOf") or []
        if not any(not validate(value, option, path) for option in options):
            errors.append(f"{path}: matches none of the allowed alternatives")
        return errors
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_is_type(value, k) for k in kinds):
            return [f"{path}: expected {'/'.join(map(str, kinds))}, got {_type_of(value)}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: must be {schema['const']!r}")
    if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
        errors.append(f"{path}: {value!r} is not one of {schema['enum']!r}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path}: missing required {name!r}")
        for name, item in value.items():
            if name in props:
                errors.extend(validate(item, props[name], f"{path}.{name}"))
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected property {name!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors.extend(validate(item, schema["additionalProperties"], f"{path}.{name}"))
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                errors.extend(validate(item, schema["items"], f"{path}[{i}]"))
    if _is_number(value):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: above the maximum {schema['maximum']}")
    return errors


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_type(value: Any, kind: str) -> bool:
    match kind:
        case "object":
            return isinstance(value, dict)
        case "array":
            return isinstance(value, list)
        case "string":
            return isinstance(value, str)
        case "boolean":
            return isinstance(value, bool)
        case "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        case "number":
            return _is_number(value)
        case "null":
            return value is None
    return True  # an unknown type name constrains nothing


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "string" if isinstance(value, str) else type(value).__name__


def _same(a: Any, b: Any) -> bool:
    return (type(a) is type(b) and a == b) or (_is_number(a) and _is_number(b) and a == b)
