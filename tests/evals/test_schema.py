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


def test_the_largest_parallel_gold_answers_fit_the_output_schema(data_dir) -> None:
    """BFCL's parallel cases want up to 8 calls; the schema must not make them impossible."""
    from threadline.evals import load_bfcl
    from threadline.evals.runner import gold_arguments

    big = [c for c in load_bfcl(data_dir, "parallel") if len(c.ground_truth) >= 5]
    assert max(len(c.ground_truth) for c in big) == 8
    for case in big:
        answer = [
            {"intent": name, "arguments": gold_arguments(options)}
            for entry in case.ground_truth
            for name, options in entry.items()
        ]
        assert validate(answer, eval_output_schema(eval_tools(case.functions))) == [], case.id


def test_the_local_grammar_keeps_the_schemas_own_bound_on_calls() -> None:
    from threadline.evals import MAX_CALLS
    from threadline.models.local_grammar import bounded_schema

    tools = eval_tools([{"name": "f", "description": "", "parameters": BFCL_PARAMS}])
    bounded = bounded_schema(eval_output_schema(tools))
    (calls,) = [s for s in bounded["oneOf"] if s.get("type") == "array"]
    assert calls["maxItems"] == MAX_CALLS >= 8
    # arrays without a bound of their own still get the short default
    point = calls["items"]["oneOf"][0]["properties"]["arguments"]["properties"]["point"]
    assert point["maxItems"] == 6
