"""Fixtures shared by every test folder. Examples are loaded from their files, as users do."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

# pytest-xdist's workers (`make test` runs two) start with COLUMNS=80 in their environment.
# Rich's consoles, made when threadline.cli is first imported, would keep that width for
# good, and a test that sets COLUMNS itself would not get it: without a terminal, as in a
# serial run, the width comes from each test's own COLUMNS.
os.environ.pop("COLUMNS", None)

from pg_support import pg_schema, postgres_url  # noqa: E402

__all__ = ["calculator", "deploybot", "load_example", "multi_agent", "pg_schema", "postgres_url"]

ROOT = Path(__file__).resolve().parent.parent


def load_example(name: str) -> ModuleType:
    """Import examples/<name>/agent.py as a fresh module."""
    path = ROOT / "examples" / name / "agent.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def calculator() -> ModuleType:
    return load_example("calculator")


@pytest.fixture
def deploybot() -> ModuleType:
    module = load_example("deploybot")
    module.DEPLOYMENTS.clear()
    return module


@pytest.fixture
def multi_agent() -> ModuleType:
    module = load_example("multi_agent")
    module.REFUNDS.clear()
    return module
