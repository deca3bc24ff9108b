"""Loading the public eval data: BFCL v4 and When2Call (read, never copied into the repo).

The data lives outside the project (`../shared/data` by default, relative to the current
directory). Every loader raises `EvalDataMissing` with the path it looked at when a file
is absent, so callers (the CLI, tests) can skip with a clear message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = [
    "BFCL_CATEGORIES",
    "DEFAULT_DATA_DIR",
    "WHEN2CALL_CATEGORIES",
    "BfclCase",
    "EvalDataMissing",
    "When2CallCase",
    "load_bfcl",
    "load_when2call",
    "resolve_data_dir",
]

DEFAULT_DATA_DIR = "../shared/data"
BFCL_CATEGORIES = (
    "simple_python",
    "multiple",
    "parallel",
    "parallel_multiple",
    "irrelevance",
    "live_simple",
)
HELD_OUT = frozenset({"live_simple"})
WHEN2CALL_CATEGORIES = ("tool_call", "request_for_info", "cannot_answer")
_WHEN2CALL_FILE = "when2call_test_llm_judge.jsonl"


class EvalDataMissing(ConfigError):
    """An eval data file is not where it was looked for."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"eval data not found at {path}; put the public data in ../shared/data "
            "or pass --data DIR"
        )


@dataclass(frozen=True, slots=True)
class BfclCase:
    """One BFCL test: the conversation, the functions on offer, the acceptable calls."""

    id: str
    category: str
    messages: tuple[dict[str, str], ...]
    functions: tuple[dict[str, Any], ...]
    ground_truth: tuple[dict[str, dict[str, list[Any]]], ...] = ()


@dataclass(frozen=True, slots=True)
class When2CallCase:
    """One When2Call test: the right move is `category` (tool_call/request_for_info/
    cannot_answer)."""

    id: str
    category: str
    question: str
    functions: tuple[dict[str, Any], ...]
    answers: dict[str, str] = field(default_factory=dict)


def resolve_data_dir(path: str | Path | None) -> Path:
    """The data directory: `path`, else `../shared/data`, relative to the current dir."""
    return (Path(path) if path else Path(DEFAULT_DATA_DIR)).expanduser().resolve()


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        raise EvalDataMissing(path)
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"{path}:{number}: not JSON: {exc}") from None


def load_bfcl(data_dir: Path, category: str, limit: int | None = None) -> list[BfclCase]:
    """The first `limit` cases of a BFCL category (all when None).

    Raises:
        ConfigError: unknown category or unreadable file.
        EvalDataMissing: the category's file is absent.
    """
    if category not in BFCL_CATEGORIES:
        raise ConfigError(
            f"unknown BFCL category {category!r}; choose from {', '.join(BFCL_CATEGORIES)}"
        )
    folder = data_dir / "bfcl"
    answers: dict[str, Any] = {}
    if category != "irrelevance":
        for row in _jsonl(folder / f"possible_answer_{category}.json"):
            answers[row["id"]] = row["ground_truth"]
    cases: list[BfclCase] = []
    path = folder / f"BFCL_v4_{category}.json"
    for row in _jsonl(path):
        if limit is not None and len(cases) >= limit:
            break
        with _case_of(path, row):
            turns = row["question"]
            first_turn = turns[0] if turns and isinstance(turns[0], list) else turns
            messages = tuple({"role": m["role"], "content": m["content"]} for m in first_turn)
            cases.append(
                BfclCase(
                    id=row["id"],
                    category=category,
                    messages=messages,
                    functions=tuple(row["function"]),
                    ground_truth=tuple(answers.get(row["id"], ())),
                )
            )
    return cases


@contextmanager
def _case_of(path: Path, row: dict[str, Any]) -> Iterator[None]:
    """Turn a row missing what a case needs into one clear error naming the file."""
    try:
        yield
    except (KeyError, TypeError, IndexError) as exc:
        name = row.get("id") or row.get("uuid") if isinstance(row, dict) else None
        raise ConfigError(
            f"{path}: row {name or '?'} is not a case: {type(exc).__name__}: {exc}"
        ) from None


def load_when2call(
    data_dir: Path, categories: tuple[str, ...] = WHEN2CALL_CATEGORIES, limit: int | None = None
) -> list[When2CallCase]:
    """When2Call cases, the first `limit` of each wanted category (its `correct_answer`)."""
    unknown = set(categories) - set(WHEN2CALL_CATEGORIES)
    if unknown:
        raise ConfigError(
            f"unknown When2Call category {', '.join(sorted(unknown))}; choose "
            f"from {', '.join(WHEN2CALL_CATEGORIES)}"
        )
    counts: dict[str, int] = {}
    cases: list[When2CallCase] = []
    path = data_dir / "when2call" / _WHEN2CALL_FILE
    for row in _jsonl(path):
        with _case_of(path, row):
            category = row["correct_answer"]
            if category not in categories:
                continue
            if limit is not None and counts.get(category, 0) >= limit:
                continue
            counts[category] = counts.get(category, 0) + 1
            tools = tuple(json.loads(t) if isinstance(t, str) else t for t in row["tools"])
            cases.append(
                When2CallCase(
                    id=row.get("uuid") or row.get("source_id", ""),
                    category=category,
                    question=row["question"],
                    functions=tools,
                    answers=dict(row.get("answers") or {}),
                )
            )
    return cases
