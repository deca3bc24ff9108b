"""json_schema.py: arguments checked against a published JSON Schema by `jsonschema`,
kept exactly as sent, refused with pydantic-style located errors, never fetching a `$ref`."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from threadline.errors import ToolDefinitionError
from threadline.json_schema import JsonSchemaValidator

BOOK = {
    "type": "object",
    "properties": {
        "flight": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{3,4}$"},
        "seats": {"type": "integer", "minimum": 1},
        "fare": {"anyOf": [{"type": "number"}, {"enum": ["cheapest"]}]},
        "passenger": {"$ref": "#/$defs/person"},
    },
    "required": ["flight", "seats"],
    "additionalProperties": False,
    "$defs": {"person": {"type": "object", "required": ["name"]}},
}


def _problems(validator: JsonSchemaValidator, arguments: Any) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        validator.validate(arguments)
    return [(tuple(e["loc"]), e["msg"]) for e in caught.value.errors()]


def test_accepted_arguments_come_back_exactly_as_sent() -> None:
    published = copy.deepcopy(BOOK)
    validator = JsonSchemaValidator(published, name="book")
    sent = {"flight": "HA123", "seats": 2, "fare": 99.5, "passenger": {"name": "Ana"}}
    checked = validator.validate(sent)
    assert checked.root is sent and checked.model_dump(mode="json") == sent
    assert isinstance(validator.validate({"flight": "HA123", "seats": 1}).root["seats"], int)
    published["properties"]["seats"]["minimum"] = 0  # the validator keeps its own copy
    assert validator.schema["properties"]["seats"]["minimum"] == 1


def test_refusals_are_located_specific_first_and_never_coerced() -> None:
    validator = JsonSchemaValidator(BOOK, name="book")
    problems = _problems(
        validator, {"flight": "ha1", "seats": "2", "fare": "dear", "extra": 1, "passenger": {}}
    )
    locs = [loc for loc, _ in problems]
    assert ("flight",) in locs and ("seats",) in locs and ("passenger",) in locs
    assert locs[-1] == ("fare",)  # the vague anyOf failure comes after the specific ones
    assert any("'2' is not of type 'integer'" in msg for _, msg in problems)  # no coercion
    assert any("'extra' was unexpected" in msg for _, msg in problems)
    assert _problems(validator, ["not", "an", "object"]) == [
        ((), "the arguments must be a JSON object")
    ]


def test_a_remote_ref_is_never_fetched() -> None:
    remote = {"type": "object", "properties": {"x": {"$ref": "https://example.com/x.json"}}}
    ((loc, message),) = _problems(JsonSchemaValidator(remote, name="r"), {"x": 1})
    assert loc == () and message.startswith("the tool's schema cannot be applied")


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ([], "must be a JSON object"),
        ({"type": "array"}, "must have type 'object'"),
        ({"type": "object", "properties": {"x": {"type": "thing"}}}, "invalid JSON Schema"),
    ],
)
def test_a_bad_schema_is_refused_when_the_tool_is_defined(schema: Any, says: str) -> None:
    with pytest.raises(ToolDefinitionError, match=says):
        JsonSchemaValidator(schema, name="bad")
