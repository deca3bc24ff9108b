"""loader.py: an agent reference (`path/file.py:name` or `package.module:name`) gives the
Agent, or one clear ConfigError saying what is wrong with it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from threadline import Agent, ConfigError
from threadline.loader import load_agent, portable_ref

AGENT_FILE = """
from threadline import Agent
from helper import NAME  # a sibling module: the file's folder is importable while it loads

agent = Agent(NAME)
not_an_agent = 42
"""


def test_a_file_reference_loads_once_with_its_siblings(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("NAME = 'from-file'\n")
    (tmp_path / "bot.py").write_text(AGENT_FILE)
    ref = f"{tmp_path / 'bot.py'}:agent"
    agent = load_agent(ref)
    assert isinstance(agent, Agent) and agent.name == "from-file"
    assert load_agent(ref) is agent  # the module is imported once per file
    assert str(tmp_path) not in sys.path  # and the folder is not left on the path


def test_a_module_reference_loads_from_the_import_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "loader_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "bots.py").write_text("from threadline import Agent\nagent = Agent('from-module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_agent("loader_pkg.bots:agent").name == "from-module"


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("no-colon", "must look like path/to/file.py:name"),
        ("bot.py:", "must look like"),
        ("missing/bot.py:agent", "does not exist"),
        ("threadline_no_such_module:agent", "cannot import module"),
        ("{dir}/bot.py:nobody", "has no attribute 'nobody'"),
        ("{dir}/bot.py:not_an_agent", "is a int, not a threadline Agent"),
        ("{dir}/broken.py:agent", "importing .* failed: ZeroDivisionError"),
    ],
)
def test_a_bad_reference_is_one_clear_error(tmp_path: Path, ref: str, says: str) -> None:
    (tmp_path / "helper.py").write_text("NAME = 'x'\n")
    (tmp_path / "bot.py").write_text(AGENT_FILE)
    (tmp_path / "broken.py").write_text("1 / 0\n")
    with pytest.raises(ConfigError, match=says):
        load_agent(ref.format(dir=tmp_path))
    assert str(tmp_path) not in sys.path


def test_a_portable_reference_names_the_file_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a thread records: a file's path made absolute (the folder a later command runs
    in is another); a module reference is found on the import path, so it stays as given."""
    (tmp_path / "bots").mkdir()
    (tmp_path / "bots" / "bot.py").write_text(
        "from threadline import Agent\nagent = Agent('portable')\n"
    )
    monkeypatch.chdir(tmp_path)
    ref = portable_ref("bots/bot.py:agent")
    assert ref == f"{tmp_path.resolve() / 'bots' / 'bot.py'}:agent"
    assert portable_ref("./bots/../bots/bot.py:agent") == ref
    assert portable_ref(ref) == ref
    assert portable_ref("bot.py:agent") == f"{tmp_path.resolve() / 'bot.py'}:agent"
    monkeypatch.chdir(tmp_path / "bots")
    assert load_agent(ref).name == "portable"
    assert portable_ref("loader_pkg.bots:agent") == "loader_pkg.bots:agent"
    assert portable_ref("no-colon") == "no-colon"  # load_agent says what is wrong with it
