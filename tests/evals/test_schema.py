"""BFCL dialect -> JSON Schema, and the strict validator."""

from __future__ import annotations

from threadline.evals.schema import eval_output_schema, eval_tools, to_json_schema, validate

BFCL_PARAMS = {
    "type": "dict",
    "properties": {
        "ratio": {"type": "float", "description": "a ratio"},
        "point": {"type": "tuple", "items": {"type": "integer"}},
        "anything": {"type": "any"},
        "filters": {"type": "dict", "properties": {"field": {"type": "string"}}, "optional": True},
        "mode": {"type": "string", "enum": ["fast", "slow"]},
        "names": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["ratio", "ghost"],
}


def test_dialect_is_mapped_recursively() -> None:
    schema = to_json_schema(BFCL_PARAMS)
    props = schema["properties"]
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert props["ratio"] == {"type": "number", "description": "a ratio"}
    assert props["point"]["type"] == "array" and props["point"]["items"] == {"type": "integer"}
    assert props["anything"]["type"] == "string"
    assert props["filters"]["type"] == "object" and "optional" not in props["filters"]
    assert props["filters"]["additionalProperties"] is False
    assert schema["required"] == ["ratio"]  # a required name with no property is dropped


def test_strict_validation() -> None:
    schema = to_json_schema(BFCL_PARAMS)
    assert validate({"ratio": 1, "mode": "fast", "point": [1, 2]}, schema) == []
    assert validate({"ratio": 0.5, "names": ["a"]}, schema) == []
    errors = {
        "missing": validate({}, schema),
        "bool is not a number": validate({"ratio": True}, schema),
        "None is nothing": validate({"ratio": None}, schema),
        "enum": validate({"ratio": 1, "mode": "medium"}, schema),
        "extra": validate({"ratio": 1, "colour": "red"}, schema),
        "item type": validate({"ratio": 1, "point": [1.5]}, schema),
        "string for number": validate({"ratio": "1"}, schema),
    }
    for case, found in errors.items():
        assert found, case
    assert "unexpected property 'colour'" in errors["extra"][0]


def test_output_schema_offers_one_intent_or_a_list_of_calls() -> None:
    tools = eval_tools([{"name": "f", "description": "", "parameters": BFCL_PARAMS}])
    assert [t.name for t in tools] == ["f", "request_more_information", "done_for_now"]
    schema = eval_output_schema(tools)
    single = {"intent": "f", "arguments": {"ratio": 2}}
    assert validate(single, schema) == []
    assert validate([single, single], schema) == []
    assert validate({"intent": "done_for_now", "arguments": {"message": "no"}}, schema) == []
    assert validate([{"intent": "done_for_now", "arguments": {"message": "no"}}], schema)
    assert validate({"intent": "g", "arguments": {}}, schema)
