"""The PostgreSQL test fixture fails under CI=true and skips (saying how to enable) elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROBE = """
def test_probe(postgres_url):
    assert postgres_url
"""


def run_probe(tmp_path: Path, ci: str) -> subprocess.CompletedProcess[str]:
    tests = Path(__file__).resolve().parent
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(tests)!r})\n"
        "from pg_support import postgres_url  # noqa: F401\n"
    )
    env = {
        **os.environ,
        "CI": ci,
        "THREADLINE_TEST_POSTGRES_URL": "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1",
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(probe)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unreachable_postgres_skips_with_instructions_on_a_laptop(tmp_path: Path) -> None:
    result = run_probe(tmp_path, "")
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout
    assert "THREADLINE_TEST_POSTGRES_URL" in result.stdout


def test_unreachable_postgres_fails_under_ci(tmp_path: Path) -> None:
    result = run_probe(tmp_path, "true")
    assert result.returncode != 0
    assert "CI=true" in result.stdout and "1 error" in result.stdout
