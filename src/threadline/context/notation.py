"""A compact, lossless text notation for JSON values and JSON Schemas.

The compact renderer spends most of its tokens on tool arguments, tool results and tool
definitions. JSON is a poor fit for a model's context: every key and string is quoted and,
inside a chat request, escaped a second time. This notation keeps every value and drops
only punctuation a reader does not need:

* Mappings at the top of a block are YAML-like lines, `key: value`; nested mappings and
  lists are written inline, `{a: 1, b: x}` and `[x, y]`.
* A list of mappings that share their keys (after flattening nested mappings to dotted
  keys) becomes a table: a header `[N]{k1,k2,...}:` then N comma-separated rows; a row
  that lacks a key has nothing between its commas. Columns of one nested mapping are
  grouped in the header: `prices{economy,business}` for `prices.economy,prices.business`.
  This is where search results shrink the most. A mapping of such mappings (records by
  id) becomes `name{N by key}{k1,...}:` with rows `id: v1,v2,...`; when a column equals
  its row's key in every row (the records' own `id`), the header says `{N by id}` and the
  rows leave it out.
* Strings are written bare when that cannot be misread (no separators, not a number,
  boolean or null) and JSON-quoted otherwise, so `"42"` and `42` stay distinct.
* Multi-line strings at block level use YAML's literal style (`key: |` then the lines).

`dump_schema` writes a tool's JSON Schema as an indented signature: one line per argument
with its type, enum values, constraints and description; optional arguments end in `?`.
Nothing in the schema is dropped except pydantic's generated `title`s and the
`additionalProperties: false` that every strict tool has (stated once in the prompt).

Invariant: every scalar in the input appears in the output, spelled so that parsing it back
gives the same JSON type and value.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ..bounds import parse_json

__all__ = ["dump_block", "dump_inline", "dump_schema", "dump_tools"]

_BARE = re.compile(r"[^\s,{}\[\]\"'#|`][^,{}\[\]\"\n|`]*")
_BLOCK_BARE = re.compile(r"[^\s{}\[\]\"'|`>][^\n]*")
_AMBIGUOUS = re.compile(r"(?i:true|false|null)|[-+]?(\d[\d_]*)?\.?\d+([eE][-+]?\d+)?")


_NUMBERS = (int, float)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, _NUMBERS):
        return json.dumps(value)
    return json.dumps(str(value), ensure_ascii=False)


def _string(text: str, *, block: bool = False) -> str:
    pattern = _BLOCK_BARE if block else _BARE
    if (
        text
        and pattern.fullmatch(text)
        and not text.endswith((" ", ":"))
        and ": " not in text
        and not _AMBIGUOUS.fullmatch(text)
    ):
        return text
    return json.dumps(text, ensure_ascii=False)


def dump_inline(value: Any) -> str:
    """One value on one line: `{k: v}`, `[a, b]`, bare or quoted strings."""
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)}: {dump_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(dump_inline(v) for v in value) + "]"
    return _scalar(value)


_PLAIN_KEY = re.compile(r"[A-Za-z_][\w.\-]*")


def _key(key: Any) -> str:
    text = str(key)
    return text if _PLAIN_KEY.fullmatch(text) else json.dumps(text)


def _flatten(row: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in row.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and v and all(isinstance(x, str) for x in v):
            out.extend(_flatten(v, name + "."))
        else:
            out.append((name, v))
    return out


_ABSENT = object()
"""A table cell for a key this row does not have (written as nothing between commas)."""


def _table(items: Sequence[Any]) -> tuple[list[str], list[list[Any]]] | None:
    """Header and rows when `items` are mappings with (mostly) the same flattened keys.

    Rows missing a key of the header get an empty cell; tables where a row would miss
    more than half of the header are not worth it and return None.
    """
    if not items or not all(isinstance(i, Mapping) and i for i in items):
        return None
    flat = [dict(_flatten(i)) for i in items]
    header: list[str] = []
    for entry in flat:
        header.extend(k for k in entry if k not in header)
    if any(not isinstance(k, str) or "," in k for k in header):
        return None
    if any(2 * len(entry) < len(header) for entry in flat):
        return None
    rows = [[entry.get(k, _ABSENT) for k in header] for entry in flat]
    if len(rows) == 1 and any(isinstance(c, Mapping | list | tuple) for c in rows[0]):
        return None  # one row with nested values reads better as a mapping
    return header, rows


def _header(columns: Sequence[str]) -> str:
    """Table columns, neighbours flattened from one nested mapping grouped under its key:
    `available_seats{economy,business}` for `available_seats.economy,available_seats.business`
    (the dotted names, written once per table, are most of a search result's header)."""
    out: list[str] = []
    i = 0
    while i < len(columns):
        head, dot, _ = columns[i].partition(".")
        j = i
        while dot and j < len(columns) and columns[j].startswith(head + "."):
            j += 1
        if j - i >= 2:
            inner = _header([c[len(head) + 1 :] for c in columns[i:j]])
            out.append(f"{head}{{{inner}}}")
            i = j
        else:
            out.append(columns[i])
            i += 1
    return ",".join(out)


def _cell(value: Any) -> str:
    return "" if value is _ABSENT else dump_inline(value)


def _keyed(
    value: Mapping[str, Any],
) -> tuple[list[str], str, list[str], list[list[Any]]] | None:
    """A mapping of >= 2 mappings (e.g. payment methods by id) as a table keyed by row:
    (keys, what the key is, header, rows).

    What the key is: `key`, or the name of a column that equals its row's key in every row
    (`id` of payment methods stored under their id), which is then left out of the rows:
    the key spells it once.
    """
    if len(value) < 2 or not all(isinstance(v, Mapping) for v in value.values()):
        return None
    keys = list(value)
    if any(not isinstance(k, str) or _string(k) != k for k in keys):
        return None
    table = _table(list(value.values()))
    if table is None or any(isinstance(c, Mapping | list | tuple) for r in table[1] for c in r):
        return None
    header, rows = table
    for col, name in enumerate(header):
        if all(r[col] == k for k, r in zip(keys, rows, strict=True)):
            rows = [r[:col] + r[col + 1 :] for r in rows]
            return keys, name, header[:col] + header[col + 1 :], rows
    return keys, "key", header, rows


def _grouped(items: Sequence[Any]) -> tuple[list[str], list[list[list[Any]]]] | None:
    """A list of tables sharing one header (e.g. itineraries of connecting flights)."""
    if len(items) < 2 or not all(isinstance(i, list | tuple) and i for i in items):
        return None
    tables = [_table(i) for i in items]
    if any(t is None for t in tables):
        return None
    header = tables[0][0]  # type: ignore[index]
    if any(t[0] != header for t in tables):  # type: ignore[index]
        return None
    return header, [t[1] for t in tables]  # type: ignore[index]


def _table_lines(head: str, value: Sequence[Any], indent: str) -> list[str] | None:
    table = _table(value)
    if table is not None:
        header, rows = table
        # The header gives the row count, so rows need no indentation to be delimited.
        out = [f"{indent}{head}[{len(rows)}]{{{_header(header)}}}:"]
        out += [indent + ",".join(_cell(c) for c in r) for r in rows]
        return out
    grouped = _grouped(value)
    if grouped is not None:
        header, groups = grouped
        out = [f"{indent}{head}[{len(groups)} lists]{{{_header(header)}}}:"]
        for group in groups:
            for n, r in enumerate(group):
                out.append(indent + ("  - " if n == 0 else "    ") + ",".join(_cell(c) for c in r))
        return out
    return None


def _lines(value: Any, indent: str) -> list[str]:
    """Block form of a mapping or list, one entry per line."""
    # `type(...) is dict` first: `isinstance` against an ABC is a Python-level call.
    if type(value) is dict or isinstance(value, Mapping):
        if not value:
            return [indent + "{}"]
        out: list[str] = []
        for k, v in value.items():
            out.extend(_entry(_key(k), v, indent))
        return out
    if isinstance(value, list | tuple):
        tabled = _table_lines("", value, indent)
        if tabled is not None:
            return tabled
        if not value:
            return [indent + "[]"]
        out = []
        for item in value:
            if isinstance(item, Mapping | list | tuple) and item:
                sub = _lines(item, indent + "  ")
                out.append(indent + "- " + sub[0].lstrip())
                out.extend(sub[1:])
            else:
                out.append(indent + "- " + _block_scalar(item, indent + "  "))
        return out
    return [indent + _block_scalar(value, indent)]


def _entry(key: str, value: Any, indent: str) -> list[str]:
    if type(value) is str:  # the common case, without the ABC `isinstance` below
        return [f"{indent}{key}: {_block_scalar(value, indent + '  ')}"]
    if isinstance(value, list | tuple):
        tabled = _table_lines(key, value, indent)
        if tabled is not None:
            return tabled
        if value and any(isinstance(v, Mapping | list | tuple) and v for v in value):
            return [f"{indent}{key}:", *_lines(value, indent + "  ")]
    if isinstance(value, Mapping) and value:
        keyed = _keyed(value)
        if keyed is not None:
            keys, by, header, rows = keyed
            out = [f"{indent}{key}{{{len(keys)} by {by}}}{{{_header(header)}}}:"]
            out += [
                f"{indent}{k}: " + ",".join(_cell(c) for c in r)
                for k, r in zip(keys, rows, strict=True)
            ]
            return out
        inline = dump_inline(value)
        if len(inline) <= 120:
            return [f"{indent}{key}: {inline}"]
        return [f"{indent}{key}:", *_lines(value, indent + "  ")]
    return [f"{indent}{key}: {_block_scalar(value, indent + '  ')}"]


def _block_scalar(value: Any, indent: str) -> str:
    if isinstance(value, str):
        if "\n" in value and not value.startswith((" ", "\n")) and "\r" not in value:
            body = "\n".join(indent + line if line else "" for line in value.split("\n"))
            chomp = "" if value.endswith("\n") else "-"
            return f"|{chomp}\n{body.rstrip(chr(10)) if chomp else body}"
        return _string(value, block=True)
    return dump_inline(value)


def dump_block(value: Any) -> str:
    """A value as the body of a tagged block: mapping lines, tables, or one scalar."""
    if isinstance(value, str):
        # A tool that returns JSON as a string gets the same treatment as one returning
        # the structure (the tau-bench tools do this).
        stripped = value.strip()
        if stripped[:1] in ("{", "[") and stripped[-1:] in ("}", "]"):
            try:
                return dump_block(parse_json(stripped))
            except ValueError:  # not JSON, or outside the limits: shown as text
                pass
        return value
    return "\n".join(_lines(value, ""))


# -- schemas ---------------------------------------------------------------------------

_SIG_INDENT = " "
"""One space per level in signatures: after a newline, `" name"` is one token where
`"  name"` is two (one token per argument line, 0.01 of the airline runs' request)."""

_SKIP = {
    "title",
    "description",
    "type",
    "properties",
    "required",
    "items",
    "enum",
    "$defs",
    "definitions",
    "$ref",
    "anyOf",
    "oneOf",
    "allOf",
    "const",
    "default",
}


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part, {}) if isinstance(node, Mapping) else {}
        merged = dict(node) if isinstance(node, Mapping) else {}
        merged.update({k: v for k, v in schema.items() if k != "$ref"})
        return merged
    return schema


def _type(schema: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    schema = _resolve(schema, root)
    if "const" in schema:
        return "=" + dump_inline(schema["const"])
    if "enum" in schema:
        return "|".join(dump_inline(v) for v in schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(_type(s, root) for s in schema[key])
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _type(schema["allOf"][0], root)
    kind = schema.get("type")
    if isinstance(kind, list):
        return "|".join(str(k) for k in kind)
    if kind == "array":
        items = schema.get("items")
        if isinstance(items, Mapping) and items:
            inner = _type(items, root)
            return f"({inner})[]" if " " in inner or "|" in inner else f"{inner}[]"
        return "array"
    if kind is None and "properties" in schema:
        return "object"
    return str(kind) if kind else "any"


def _extras(schema: Mapping[str, Any]) -> str:
    parts = [
        f"{k}={dump_inline(v)}"
        for k, v in schema.items()
        if k not in _SKIP and not (k == "additionalProperties" and v is False)
    ]
    if "default" in schema:
        parts.insert(0, f"default={dump_inline(schema['default'])}")
    return f" ({', '.join(parts)})" if parts else ""


def _arg_line(name: str, prop: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    """`name: type (constraints) # description`; the type is left out for plain strings."""
    kind = _type(prop, root)
    line = (f"{name}: {kind}" if kind != "string" else name) + _extras(prop)
    desc = prop.get("description")
    if desc:
        line += f" # {' '.join(str(desc).split())}"
    return line


def _object_lines(
    schema: Mapping[str, Any],
    root: Mapping[str, Any],
    indent: str,
    shared: Mapping[str, str] | None = None,
) -> list[str]:
    props = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    out: list[str] = []
    for name, prop in props.items():
        prop = _resolve(prop, root)
        opt = "" if name in required else "?"
        line = _arg_line(name, prop, root)
        nested = _nested_object(prop, root)
        if shared is not None and nested is None and shared.get(name) == line:
            out.append(f"{indent}{name}{opt}")
            continue
        out.append(f"{indent}{name}{opt}{line[len(name) :]}")
        if nested is not None:
            out.extend(_object_lines(nested, root, indent + _SIG_INDENT, shared))
    return out


def _arg_lines(schema: Mapping[str, Any], root: Mapping[str, Any]) -> list[str]:
    """Every leaf argument line of a tool (nested objects included)."""
    out: list[str] = []
    for name, prop in (schema.get("properties") or {}).items():
        prop = _resolve(prop, root)
        nested = _nested_object(prop, root)
        if nested is None:
            out.append(_arg_line(name, prop, root))
        else:
            out.extend(_arg_lines(nested, root))
    return out


def _nested_object(prop: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if prop.get("properties"):
        return prop
    items = prop.get("items")
    if isinstance(items, Mapping):
        items = _resolve(items, root)
        if items.get("properties"):
            return items
    for key in ("anyOf", "oneOf"):
        for option in prop.get(key, ()):
            option = _resolve(option, root)
            found = _nested_object(option, root)
            if found is not None:
                return found
    return None


def dump_schema(
    name: str,
    description: str,
    parameters: Mapping[str, Any],
    shared: Mapping[str, str] | None = None,
) -> str:
    """One tool as `name: description` and an indented argument list.

    Arguments whose full line is in `shared` are written by name only.
    """
    head = f"{name}: {' '.join(description.split())}" if description else f"{name}:"
    extras = _extras({k: v for k, v in parameters.items() if k != "type"})
    lines = [head + extras, *_object_lines(parameters, parameters, _SIG_INDENT, shared)]
    if not parameters.get("properties"):
        lines.append(f"{_SIG_INDENT}(no arguments)")
    return "\n".join(lines)


def dump_tools(specs: Sequence[tuple[str, str, Mapping[str, Any]]]) -> str:
    """Several tools, one signature block each.

    An argument defined identically (name, type, description) in two or more places is
    written once under `Shared arguments` and referred to by name: lossless, and tool sets
    that pass the same ids around (user_id, reservation_id, ...) shrink a lot. When tools
    define one name differently, the most common definition is shared and the others are
    written in full where they occur.
    """
    seen: dict[str, Counter[str]] = {}
    for _, _, params in specs:
        for line in _arg_lines(params, params):
            seen.setdefault(re.split(r"[: (]", line, maxsplit=1)[0], Counter())[line] += 1
    # Per name, the line most tools define; tools whose line differs write theirs in full.
    # Only lines long enough to be worth a cross-reference (`a: number` is not).
    shared = {}
    for n, lines in seen.items():
        line, times = lines.most_common(1)[0]
        if times >= 2 and len(line) >= len(n) + 16:
            shared[n] = line
    blocks = []
    if shared:
        blocks.append(
            "Shared arguments (tools list them by name):\n"
            + "\n".join(_SIG_INDENT + line for line in shared.values())
        )
    blocks += [dump_schema(n, d, p, shared) for n, d, p in specs]
    text = "\n".join(blocks)
    optional = re.search(r"(?m)^ +[^\s:#(?]+\?", text) is not None
    return (
        text
        + "\nUntyped arguments are strings"
        + ("; `?` marks optional ones." if optional else ".")
    )
