"""models/local_grammar.py: the intent schema bounded and turned into a llama.cpp grammar
(llama-cpp-python's own converter, and its own grammar parser to check the result)."""

from __future__ import annotations

from threadline.models.local_grammar import (
    MAX_ITEMS,
    MAX_ITEMS_EXPLICIT,
    MAX_STRING,
    bounded_schema,
    grammar_text,
)

SCHEMA = {
    "type": "object",
    "title": "Intent",
    "$defs": {
        "Tag": {"type": "string", "enum": ["v1", "v2"], "description": "a tag"},
        "Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}},
    },
    "properties": {
        "tag": {"$ref": "#/$defs/Tag"},
        "note": {"type": "string", "maxLength": 500},
        "name": {"type": "string", "maxLength": 10},
        "ids": {"type": "array", "items": {"type": "integer"}},
        "many": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
        "node": {"$ref": "#/$defs/Node"},
        "missing": {"$ref": "#/$defs/Nowhere"},
    },
    "required": ["tag"],
}


def test_refs_are_inlined_and_strings_and_arrays_bounded() -> None:
    out = bounded_schema(SCHEMA)
    assert "$defs" not in out and "title" not in out and out["required"] == ["tag"]
    props = out["properties"]
    assert props["tag"] == {"type": "string", "enum": ["v1", "v2"]}  # enums keep no bound
    assert props["note"]["maxLength"] == MAX_STRING
    assert props["name"]["maxLength"] == 10  # a schema's own tighter bound stays
    assert props["ids"]["maxItems"] == MAX_ITEMS
    assert props["many"]["maxItems"] == MAX_ITEMS_EXPLICIT
    assert props["many"]["items"]["maxLength"] == MAX_STRING
    assert props["missing"] == {}  # an unknown ref allows any JSON value
    depth, node = 0, props["node"]
    while node:  # a recursive ref is unrolled a few levels, then any value
        node = node["properties"]["next"]
        depth += 1
    assert 1 < depth <= 10
    assert SCHEMA["properties"]["note"]["maxLength"] == 500  # the input is not changed


def test_the_grammar_parses_in_llama_cpp_and_forbids_raw_control_characters() -> None:
    from llama_cpp import LlamaGrammar  # the `local` extra: part of the test install

    text = grammar_text(SCHEMA)
    assert 'char ::= [^"\\\\\\x00-\\x1F]' in text
    LlamaGrammar.from_string(text, verbose=False)  # raises if llama.cpp cannot read it
