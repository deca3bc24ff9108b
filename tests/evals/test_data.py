"""evals/data.py: the public BFCL v4 and When2Call sets in ../shared/data, read as cases
(never copied), and a clear error naming the path when a file is absent or broken."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared_data import SHARED, require_shared
from threadline.errors import ConfigError
from threadline.evals.data import (
    BFCL_CATEGORIES,
    WHEN2CALL_CATEGORIES,
    EvalDataMissing,
    load_bfcl,
    load_when2call,
    resolve_data_dir,
)


def test_bfcl_cases_carry_the_conversation_functions_and_answers() -> None:
    require_shared(SHARED / "bfcl")
    for category in ("simple_python", "parallel_multiple", "irrelevance"):
        cases = load_bfcl(SHARED, category, limit=5)
        assert len(cases) == 5 and len({c.id for c in cases}) == 5
        for case in cases:
            assert case.category == category and case.functions
            assert case.messages and all(m["role"] in ("user", "system") for m in case.messages)
            # Irrelevance has no acceptable call; the others have one per expected call.
            assert bool(case.ground_truth) == (category != "irrelevance")
    everything = load_bfcl(SHARED, "simple_python")
    assert len(everything) > 5  # no limit: the whole category


def test_when2call_cases_take_the_first_of_each_wanted_category() -> None:
    require_shared(SHARED / "when2call")
    cases = load_when2call(SHARED, limit=3)
    assert [c.category for c in cases].count("tool_call") == 3
    assert {c.category for c in cases} == set(WHEN2CALL_CATEGORIES)
    only = load_when2call(SHARED, ("cannot_answer",), limit=2)
    assert [c.category for c in only] == ["cannot_answer", "cannot_answer"]
    assert all(isinstance(f, dict) for c in cases for f in c.functions)  # decoded JSON


def test_missing_broken_and_unknown_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(EvalDataMissing, match=str(tmp_path / "bfcl")) as missing:
        load_bfcl(tmp_path, "multiple")
    assert missing.value.path.name == "possible_answer_multiple.json"
    (tmp_path / "when2call").mkdir()
    broken = tmp_path / "when2call" / "when2call_test_llm_judge.jsonl"
    broken.write_text('{"uuid": "u1", "question": "q"}\n')
    with pytest.raises(ConfigError, match=r"row u1 is not a case: KeyError: 'correct_answer'"):
        load_when2call(tmp_path)
    broken.write_text("{oops\n")
    with pytest.raises(ConfigError, match=r"when2call_test_llm_judge.jsonl:1: not JSON"):
        load_when2call(tmp_path)
    with pytest.raises(ConfigError, match="unknown BFCL category 'chess'"):
        load_bfcl(tmp_path, "chess")
    with pytest.raises(ConfigError, match="unknown When2Call category maybe"):
        load_when2call(tmp_path, ("maybe",))
    assert "simple_python" in BFCL_CATEGORIES


def test_the_default_data_dir_is_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir(None) == (tmp_path / ".." / "shared" / "data").resolve()
    assert resolve_data_dir("~/x") == Path("~/x").expanduser().resolve()
