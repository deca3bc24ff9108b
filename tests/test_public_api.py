"""The public API is exactly `threadline.__all__`: sorted, resolvable and complete."""

from __future__ import annotations

import types

import threadline


def test_all_is_sorted_and_resolves() -> None:
    assert threadline.__all__ == sorted(threadline.__all__)
    for name in threadline.__all__:
        assert getattr(threadline, name) is not None, name


def test_every_public_attribute_is_exported() -> None:
    public = {
        name
        for name, value in vars(threadline).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name not in {"annotations", "Any", "Coroutine", "TypeVar", "T", "asyncio"}
    }
    assert public == set(threadline.__all__)


def test_every_exported_error_derives_from_the_root() -> None:
    for name in threadline.__all__:
        value = getattr(threadline, name)
        if (
            isinstance(value, type)
            and issubclass(value, Exception)
            and value is not threadline.RetryableToolError
        ):
            assert issubclass(value, threadline.ThreadlineError), name
    assert not issubclass(threadline.RetryableToolError, threadline.ThreadlineError)


def test_every_error_an_append_refuses_with_is_exported() -> None:
    """What a caller of `Store.append` (or `Runtime`) catches to tell a refused append apart
    is importable from `threadline` itself, as the store contract (stores/base.py) names it."""
    for name in (
        "AppendConflict",
        "CorruptEvent",
        "LeaseLost",
        "StaleWriteAhead",
        "ThreadNotFound",
    ):
        assert name in threadline.__all__, name
        assert issubclass(getattr(threadline, name), threadline.ThreadlineError)
