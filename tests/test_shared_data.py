"""`require_shared`: a missing ../shared/data skips on a laptop and fails in CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared_data import require_shared


def test_present_paths_pass(tmp_path: Path) -> None:
    require_shared(tmp_path)


def test_missing_data_fails_in_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="shared data absent"):
        require_shared(tmp_path / "absent")


def test_missing_data_skips_outside_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="absent"):
        require_shared(tmp_path / "absent")
