"""errors.py: the hierarchy drawn in the module docstring is the real one, every exported
exception is drawn there, and constructors only store what they are given."""

from __future__ import annotations

import inspect
import logging
import re

import pytest

import threadline.errors as errors


def _drawn() -> dict[str, str]:
    """child -> parent, read from the tree drawings of the module docstring."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        # Tree lines are indented code: "    Root", "    ├── Child", "    │   └── Grandchild".
        found = re.match(r"^    ((?:[│ ]   )*(?:[├└]── )?)([A-Z]\w+)(?:\s|$)", line)
        if found is None:
            continue
        depth = len(found.group(1))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[found.group(2)] = stack[-1][1]
        stack.append((depth, found.group(2)))
    return parents


def _exported() -> dict[str, type[BaseException]]:
    return {
        name: cls
        for name in errors.__all__
        if inspect.isclass(cls := getattr(errors, name)) and issubclass(cls, BaseException)
    }


def test_the_drawn_hierarchy_is_the_real_one() -> None:
    drawn = _drawn()
    exported = _exported()
    roots = {name for name, cls in exported.items() if cls.__base__ in (Exception,)}
    assert roots == {"ThreadlineError", "ToolSignal"}
    assert set(drawn) == set(exported) - roots, "draw each exception in the docstring"
    for child, parent in drawn.items():
        assert exported[child].__base__ is exported[parent], f"{child} is drawn under {parent}"


def test_signals_are_not_errors() -> None:
    for name, cls in _exported().items():
        if issubclass(cls, errors.ToolSignal):
            assert not issubclass(cls, errors.ThreadlineError), name


def test_constructors_only_store_their_arguments(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        conflict = errors.AppendConflict("th_1", 4, 6)
        corrupt = errors.CorruptEvent("th_1", 3, "not JSON")
        missing = errors.ThreadNotFound("th_9")
    assert (conflict.thread_id, conflict.expected_seq, conflict.actual_seq) == ("th_1", 4, 6)
    assert "another writer appended first" in str(conflict)
    assert (corrupt.thread_id, corrupt.seq) == ("th_1", 3) and "th_1" in str(corrupt)
    assert "th_9" in str(missing)
    assert caplog.records == []  # no logging (nor any other side effect) on construction
