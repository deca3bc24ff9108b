"""The compact notation keeps every value and is shorter than JSON."""

from __future__ import annotations

import json

from threadline.context.notation import dump_block, dump_inline, dump_schema, dump_tools
from threadline.context.tokens import BPECounter


def _scalars(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _scalars(v)
    elif isinstance(value, list):
        for v in value:
            yield from _scalars(v)
    else:
        yield value


FLIGHTS = [
    {
        "flight_number": "HAT069",
        "origin": "JFK",
        "status": "available",
        "seats": {"economy": 12, "business": 3},
        "price": 121.5,
    },
    {
        "flight_number": "HAT083",
        "origin": "JFK",
        "status": "delayed",
        "seats": {"economy": 7, "business": 0},
        "price": 100,
    },
]


def test_uniform_lists_become_tables_with_dotted_headers() -> None:
    text = dump_block({"flights": FLIGHTS})
    assert text.splitlines()[0] == (
        "flights[2]{flight_number,origin,status,seats{economy,business},price}:"
    )
    assert "HAT069,JFK,available,12,3,121.5" in text
    counter = BPECounter()
    assert counter.count(text) < counter.count(json.dumps({"flights": FLIGHTS}))


def test_strings_that_would_read_as_other_types_are_quoted() -> None:
    text = dump_inline(
        {
            "zip": "78750",
            "flag": "true",
            "none": None,
            "n": 3,
            "empty": "",
            "comma": "a, b",
            "plain": "975 Sunset Drive",
        }
    )
    assert text == (
        '{zip: "78750", flag: "true", none: null, n: 3, empty: "", '
        'comma: "a, b", plain: 975 Sunset Drive}'
    )


def test_every_scalar_survives() -> None:
    value = {
        "user": {"name": "Mia Li", "dob": "1990-04-05"},
        "flights": FLIGHTS,
        "groups": [FLIGHTS, FLIGHTS],
        "notes": "line one\nline two",
        "ok": True,
    }
    text = dump_block(value)
    for scalar in _scalars(value):
        if isinstance(scalar, str):
            for line in scalar.splitlines():
                assert line in text
        else:
            assert json.dumps(scalar) in text
    assert "[2 lists]" in text


def test_json_strings_from_tools_are_decoded_first() -> None:
    assert dump_block('{"a": 1, "b": "x"}') == "a: 1\nb: x"
    assert dump_block("plain text, not JSON") == "plain text, not JSON"


def test_schema_keeps_types_enums_constraints_and_descriptions() -> None:
    schema = {
        "type": "object",
        "properties": {
            "tag": {"type": "string", "description": "git tag"},
            "environment": {"enum": ["staging", "production"]},
            "replicas": {"type": "integer", "minimum": 1, "default": 2},
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
        },
        "required": ["tag", "environment"],
        "$defs": {
            "Item": {
                "type": "object",
                "properties": {"sku": {"type": "string"}},
                "required": ["sku"],
            }
        },
    }
    text = dump_schema("deploy", "Deploy a tag.", schema)
    assert text.splitlines() == [
        "deploy: Deploy a tag.",
        " tag # git tag",
        " environment: staging|production",
        " replicas?: integer (default=2, minimum=1)",
        " items?: object[]",
        "  sku",
    ]


def test_shared_arguments_are_defined_once() -> None:
    arg = {"type": "string", "description": "The reservation ID, such as 'ZFA04Y'."}
    specs = [
        (
            name,
            "",
            {
                "type": "object",
                "properties": {"reservation_id": arg},
                "required": ["reservation_id"],
            },
        )
        for name in ("get", "cancel")
    ]
    text = dump_tools(specs)
    assert text.count("such as 'ZFA04Y'") == 1
    assert "get:\n reservation_id\ncancel:\n reservation_id" in text


def test_a_name_defined_differently_shares_its_most_common_definition() -> None:
    def spec(name: str, description: str) -> tuple[str, str, dict[str, object]]:
        arg = {"type": "string", "description": description}
        schema = {"type": "object", "properties": {"origin": arg}, "required": ["origin"]}
        return (name, "", schema)

    airport = "The origin city airport in three letters, such as 'JFK'."
    iata = "The IATA code for the origin city, such as 'SFO'."
    text = dump_tools([spec("book", iata), spec("direct", airport), spec("onestop", airport)])
    assert text.count(airport) == 1 and text.count(iata) == 1
    assert "direct:\n origin\nonestop:\n origin\n" in text  # by name: the shared line
    assert f"book:\n origin # {iata}" in text  # the one that differs, in full
    assert text.endswith("Untyped arguments are strings.")  # no optional argument to mark


def test_nested_columns_are_grouped_and_ids_equal_to_their_key_written_once() -> None:
    methods = {
        "card_1": {"source": "credit_card", "id": "card_1", "last_four": "7447"},
        "cert_2": {"source": "certificate", "id": "cert_2", "amount": 100},
    }
    text = dump_block({"payment_methods": methods})
    assert text.splitlines() == [
        "payment_methods{2 by id}{source,last_four,amount}:",
        'card_1: credit_card,"7447",',
        "cert_2: certificate,,100",
    ]
    other = {"a": {"id": "x", "n": 1}, "b": {"id": "y", "n": 2}}  # ids are not the keys
    assert dump_block({"m": other}).splitlines()[0] == "m{2 by key}{id,n}:"
    rows = [
        {"p": {"x": {"u": 1, "v": 2}, "y": 3}, "q": 4},
        {"p": {"x": {"u": 5, "v": 6}, "y": 7}, "q": 8},
    ]
    assert dump_block(rows).splitlines()[0] == "[2]{p{x{u,v},y},q}:"
