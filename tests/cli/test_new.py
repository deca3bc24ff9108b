"""`threadline new NAME`: the scaffold's own tests pass as generated and `threadline build`
locks it: with this checkout, and in a fresh virtual environment that pip-installs the
project (no system site packages)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from server_support import THREADLINE
from threadline.errors import ConfigError
from threadline.scaffold import FILES, new_agent

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADLINE_")}
    return {**env, "THREADLINE_LOG": "off", "COLUMNS": "200"}


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _check_project(demo: Path, threadline: str, python: str, env: dict[str, str]) -> None:
    """The generated tests pass; `threadline build` (no --agent) locks the agent."""
    tests = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], demo, env)
    assert "4 passed" in tests, tests
    _run([threadline, "build"], demo, env)
    lock = json.loads((demo / "threadline.lock").read_text())
    assert list(lock["agents"]) == ["demo"]
    entry = lock["agents"]["demo"]
    assert entry["prompt"]["name"] == "demo" and "lookup_order" in str(entry["tools"])
    _run([threadline, "build", "--check"], demo, env)


def test_new_scaffolds_a_project_whose_tests_pass_and_that_builds(tmp_path: Path) -> None:
    env = _env()
    out = _run([THREADLINE, "new", "demo"], tmp_path, env)
    demo = tmp_path / "demo"
    assert sorted(str(p.relative_to(demo)) for p in demo.rglob("*") if p.is_file()) == sorted(FILES)
    assert "created demo/agent.py" in out
    front = (demo / "prompt.md.j2").read_text().split("---")[1]
    assert "name: demo" in front and "tools: [lookup_order]" in front
    _check_project(demo, THREADLINE, sys.executable, env)

    # a second `new` of the same name refuses, leaving the project as it was
    before = (demo / "agent.py").read_text()
    again = subprocess.run(
        [THREADLINE, "new", "demo"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert again.returncode == 1 and "already exists" in again.stderr
    assert "Traceback" not in again.stderr
    assert (demo / "agent.py").read_text() == before


def test_bad_names_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    for name in ("Demo", "1demo", "de mo", "../escape", ""):
        with pytest.raises(ConfigError, match="agent name"):
            new_agent(name, tmp_path, version="0.1.0")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(ConfigError, match="already exists"):
        new_agent("taken", tmp_path, version="0.1.0")
    (tmp_path / "empty").mkdir()
    assert len(new_agent("empty", tmp_path, version="0.1.0")) == len(FILES)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_new_in_a_fresh_virtual_environment(tmp_path: Path) -> None:
    """A real venv without system site packages; the project installed from this checkout
    with its core dependencies (from the package index, or pip's cache), plus pytest."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    python, threadline = str(env_dir / "bin" / "python"), str(env_dir / "bin" / "threadline")
    env = {k: v for k, v in _env().items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)]
        + ["pytest>=8"],
        tmp_path,
        env,
        timeout=900,
    )
    # nothing leaks in from the test's own environment
    probe = _run(
        [python, "-c", "import threadline, sys; print(threadline.__file__)"], tmp_path, env
    )
    assert str(env_dir) in probe and str(ROOT / "src") not in probe
    _run([threadline, "new", "demo"], tmp_path, env)
    _check_project(tmp_path / "demo", threadline, python, env)
