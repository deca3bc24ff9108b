"""BFCL's AST scoring rules, re-implemented for calls already decoded from JSON.

The ground truth maps each parameter to a list of acceptable values; `""` in that list
means the parameter may be omitted. A call is correct when (BFCL's `ast_checker`):

* the function name matches and every `required` parameter is present;
* no parameter is unknown to the schema or absent from the ground truth;
* each value has the schema's type, or the type of the acceptable values (a "variable":
  the ground truth gives a value of another type, e.g. strings for an integer list). An
  int is accepted for a float at the top level only, never inside a list; a bool is not
  an int. A list's items are checked against the item type the same way, each list of
  acceptable values lending its own item type; an acceptable value that is not a list
  (such as `""`) lets any items through;
* strings compare after standardisation (lower case; spaces and `,./-_*^` removed; `'`
  as `"`), lists element-wise the same way, dicts key by key, lists of dicts in order;
  anything else by equality with one acceptable value. For a list parameter `""` also
  stands for the empty list, so `[]` passes where the parameter is optional;
* every ground-truth parameter the call omits allows `""`.

Per category: `simple_*` and `multiple` need exactly one call; `parallel*` need as many
calls as the ground truth, matched in any order (greedily, ground truth first, as BFCL
does); `irrelevance` is correct iff no call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["Call", "check_call", "score_case", "standardize"]

Call = tuple[str, dict[str, Any]]
"""A decoded function call: (name, arguments)."""

_PY_TYPES: dict[str, type] = {
    "string": str,
    "integer": int,
    "float": float,
    "number": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "object": dict,
    "any": str,
}
_PUNCT = re.compile(r"[ ,./\-_*^]")


def standardize(text: str) -> str:
    """BFCL's string normalisation: case, spaces and light punctuation do not matter."""
    return _PUNCT.sub("", text).lower().replace("'", '"')


def score_case(
    category: str,
    functions: Sequence[dict[str, Any]],
    calls: Sequence[Call],
    ground_truth: Sequence[dict[str, dict[str, list[Any]]]],
) -> tuple[bool, str]:
    """(correct, reason) for one case, by `category`'s rule."""
    if category.startswith("irrelevance"):
        return (not calls, "" if not calls else f"made {len(calls)} call(s)")
    if len(calls) != len(ground_truth):
        return False, f"wrong number of calls: {len(calls)} for {len(ground_truth)}"
    if "parallel" in category:
        unmatched = list(range(len(calls)))
        for expected in ground_truth:
            name = next(iter(expected))
            description = _find(functions, name)
            reason = f"no call matches {name}"
            for index in unmatched:
                ok, why = check_call(description, calls[index], expected)
                if ok:
                    unmatched.remove(index)
                    break
                reason = why
            else:
                return False, reason
        return True, ""
    expected = ground_truth[0]
    return check_call(_find(functions, next(iter(expected))), calls[0], expected)


def _find(functions: Sequence[dict[str, Any]], name: str) -> dict[str, Any]:
    for f in functions:
        if f.get("name") == name:
            return f
    return functions[0] if len(functions) == 1 else {"name": name, "parameters": {}}


def check_call(
    description: dict[str, Any], call: Call, expected: dict[str, dict[str, list[Any]]]
) -> tuple[bool, str]:
    """Whether one decoded call matches one ground-truth entry `{name: {param: [values]}}`."""
    name, args = call
    want_name = next(iter(expected))
    answers = expected[want_name]
    if name != want_name:
        return False, f"called {name}, expected {want_name}"
    params = description.get("parameters") or {}
    details: dict[str, Any] = params.get("properties", {})
    for required in params.get("required", []):
        if required not in args:
            return False, f"missing required parameter {required!r}"
    for param, value in args.items():
        if param not in details or param not in answers:
            return False, f"unexpected parameter {param!r}"
        ok, why = _check_value(param, value, details[param], answers[param])
        if not ok:
            return False, why
    for param, acceptable in answers.items():
        if param not in args and "" not in acceptable:
            return False, f"parameter {param!r} omitted but not optional"
    return True, ""


def _check_value(
    param: str, value: Any, detail: dict[str, Any], acceptable: list[Any]
) -> tuple[bool, str]:
    type_name = str(detail.get("type", "any"))
    expected = _PY_TYPES.get(type_name, str)
    nested = None
    if type_name in ("array", "tuple"):
        nested = _PY_TYPES.get(str((detail.get("items") or {}).get("type", "any")), str)
    if type_name in ("float", "number") and type(value) is int:
        value = float(value)  # top level only: an int inside a list stays an int
    ok, is_variable = _type_ok(value, acceptable, expected, nested)
    if not ok:
        if type(value) is expected:
            return False, f"wrong item types in {param!r}: {value!r}"
        return False, f"{param!r} should be {type_name}, got {type(value).__name__}"
    if not is_variable:
        if expected is dict:
            return _dict_ok(param, value, acceptable)
        if expected is list and nested is dict:
            return _list_of_dicts_ok(param, value, acceptable)
        if expected is str:
            strings = [standardize(a) for a in acceptable if isinstance(a, str)]
            if standardize(value) in strings:
                return True, ""
            return False, f"{param!r}={value!r} not in {acceptable!r}"
        if expected is list:
            lists = [_standard_list(a) for a in acceptable if isinstance(a, list) or a == ""]
            if _standard_list(value) in lists:
                return True, ""
            return False, f"{param!r}={value!r} not in {acceptable!r}"
    if value in acceptable:
        return True, ""
    return False, f"{param!r}={value!r} not in {acceptable!r}"


def _answer_type(acceptable: list[Any]) -> type | None:
    """The type of the first acceptable value that is not "may be omitted"."""
    return next((type(a) for a in acceptable if a != ""), None)


def _type_ok(
    value: Any, acceptable: list[Any], expected: type, nested: type | None
) -> tuple[bool, bool]:
    """(type is acceptable, value is a "variable"), BFCL's type rule.

    `nested` is the item type of a list parameter; each item is checked with the same rule
    (no int-for-float conversion) against each acceptable list in turn.
    """
    answer_type = _answer_type(acceptable)
    is_variable = answer_type is not None and answer_type is not expected
    if type(value) is expected:
        if nested is None:
            return True, is_variable
        items = value if isinstance(value, list) else []  # `nested` implies a list
        for answer in acceptable:
            if not isinstance(answer, list) or all(
                _type_ok(item, answer, nested, None)[0] for item in items
            ):
                return True, is_variable
        return False, is_variable
    if answer_type is not None and type(value) is answer_type:
        return True, True
    return False, False


def _standard_list(value: Any) -> list[Any]:
    """A list with its strings standardised; `""` (may be omitted) is the empty list."""
    if value == "":
        return []
    return [standardize(v) if isinstance(v, str) else v for v in value]


def _dict_ok(param: str, value: dict[str, Any], acceptable: list[Any]) -> tuple[bool, str]:
    for answer in acceptable:
        if not isinstance(answer, dict):
            continue
        if _one_dict_ok(value, answer):
            return True, ""
    return False, f"{param!r}={value!r} matches no acceptable dict"


def _one_dict_ok(value: dict[str, Any], answer: dict[str, list[Any]]) -> bool:
    for key, item in value.items():
        if key not in answer:
            return False
        options = [standardize(a) if isinstance(a, str) else a for a in answer[key]]
        if (standardize(item) if isinstance(item, str) else item) not in options:
            return False
    return all(key in value or "" in options for key, options in answer.items())


def _list_of_dicts_ok(param: str, value: list[Any], acceptable: list[Any]) -> tuple[bool, str]:
    for option in acceptable:
        answer = [] if option == "" else option
        if (
            isinstance(answer, list)
            and len(answer) == len(value)
            and all(
                isinstance(v, dict) and isinstance(a, dict) and _one_dict_ok(v, a)
                for v, a in zip(value, answer, strict=True)
            )
        ):
            return True, ""
    return False, f"{param!r}={value!r} matches no acceptable list of dicts"
