"""Tool arguments checked against a published JSON Schema (`Tool.from_json_schema`).

Teams already hold their tool definitions as JSON Schema (OpenAI function specs, OpenAPI
operations, MCP tools). Turning those into pydantic models changes what the model is shown
(titles, `$defs`/`$ref`, `additionalProperties`: +25% tokens on the tau-bench airline
tools) and can change what is accepted. Here the schema stays the published one and a real
JSON Schema validator (`jsonschema`) decides.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import RootModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from .errors import ToolDefinitionError

__all__ = ["JsonArguments", "JsonSchemaValidator"]

_WEAK = frozenset({"anyOf", "oneOf"})


class JsonArguments(RootModel[dict[str, Any]]):
    """Arguments validated against a published JSON Schema, kept exactly as received.

    `root` is the very dict the model sent (JSON Schema validation never coerces), and
    `model_dump(mode="json")` gives the same JSON back.
    """


class JsonSchemaValidator:
    """Validates a tool's arguments against a published JSON Schema (draft 2020-12 unless
    the schema's `$schema` names another draft), with the `jsonschema` library.

    Invariants:
        * `schema` is the published schema, unchanged (a private deep copy).
        * `validate` returns the arguments untouched or raises pydantic's `ValidationError`
          (one line per problem, located by JSON path), like every other tool's validation.
        * no `$ref` is ever fetched over the network.
    """

    def __init__(self, schema: dict[str, Any], *, name: str = "tool") -> None:
        import jsonschema  # type: ignore[import-untyped]  # a core dependency, imported on use
        import referencing

        if not isinstance(schema, dict):
            raise ToolDefinitionError(f"tool {name}: the schema must be a JSON object")
        if schema.get("type", "object") != "object":
            raise ToolDefinitionError(
                f"tool {name}: the arguments schema must have type 'object', "
                f"not {schema.get('type')!r}"
            )
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ToolDefinitionError(f"tool {name}: invalid JSON Schema: {exc.message}") from None
        self.name = name
        self.schema: dict[str, Any] = copy.deepcopy(schema)
        # An explicit, empty registry: without one jsonschema still falls back to fetching
        # `$ref` URLs over the network (deprecated there, forbidden here).
        self._validator = cls(self.schema, registry=referencing.Registry())

    def validate(self, arguments: Any) -> JsonArguments:
        """The arguments, unchanged, if the schema accepts them; else `ValidationError`."""
        if not isinstance(arguments, dict):
            raise _validation_error(self.name, [((), "the arguments must be a JSON object")])
        # Schema order, with the vague anyOf/oneOf failures after the specific ones.
        try:
            errors = sorted(
                self._validator.iter_errors(arguments), key=lambda e: e.validator in _WEAK
            )
        except Exception as exc:  # e.g. a $ref to a URL: never fetched, so unresolvable
            reason = f"the tool's schema cannot be applied: {type(exc).__name__}: {exc}"
            raise _validation_error(self.name, [((), _short(reason))]) from None
        if errors:
            raise _validation_error(
                self.name, [(tuple(e.absolute_path), _short(e.message)) for e in errors]
            )
        return JsonArguments.model_construct(root=arguments)


def _short(message: str, limit: int = 200) -> str:
    text = " ".join(message.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _validation_error(title: str, problems: list[tuple[tuple[Any, ...], str]]) -> ValidationError:
    details: list[InitErrorDetails] = [
        {
            "type": PydanticCustomError("json_schema", "{reason}", {"reason": reason}),
            "loc": loc,
            "input": None,
        }
        for loc, reason in problems
    ]
    return ValidationError.from_exception_data(title, details)
