"""`threadline new NAME`: a runnable agent project to start from.

    NAME/
      agent.py             the agent and its one tool (a plain typed function)
      prompt.md.j2         its prompt template, with front matter (docs/prompts.md)
      prompt.cases.yaml    prompt regression cases (`threadline prompts test`)
      tests/test_agent.py  tests driven by ScriptedModel: no model, no network
      pyproject.toml       the project's dependencies and pytest settings
      README.md            how to run, test, build and serve it
      .gitignore

The generated tests pass as generated, and `threadline build` run in NAME/ locks the agent
(`agent.py:agent` is a default agent reference). The files are templates shipped inside the
package (`scaffold/agent/*.tmpl`), filled with `string.Template` (`$name`, `$version`).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from string import Template

from ..errors import ConfigError

__all__ = ["FILES", "new_agent"]

FILES = {
    "agent.py": "agent.py.tmpl",
    "prompt.md.j2": "prompt.md.j2.tmpl",
    "prompt.cases.yaml": "prompt.cases.yaml.tmpl",
    "tests/test_agent.py": "test_agent.py.tmpl",
    "pyproject.toml": "pyproject.toml.tmpl",
    "README.md": "README.md.tmpl",
    ".gitignore": "gitignore.tmpl",
}
"""Each generated file and the template it comes from."""

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")


def new_agent(name: str, parent: Path, *, version: str) -> list[Path]:
    """Write the project `parent/name/` and return the files written.

    Raises:
        ConfigError: the name is not a lowercase identifier (letters, digits, `-`, `_`,
            starting with a letter), or `parent/name` exists and is not an empty folder
            (nothing is overwritten, nothing is written).
    """
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"agent name {name!r}: use lowercase letters, digits, '-' or '_', starting with "
            "a letter (at most 63 characters)"
        )
    root = parent / name
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ConfigError(f"{root} already exists and is not empty; choose another name")
    values = {"name": name, "version": version}
    texts = {path: Template(_template(source)).substitute(values) for path, source in FILES.items()}
    written = []
    for path, text in texts.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def _template(source: str) -> str:
    return resources.files(__package__).joinpath("agent", source).read_text(encoding="utf-8")
