"""cli/common.py: what every command shares (each is declared with `command`): errors
become one line and an exit code, settings are read when a command starts, `--locked` turns
release mode on."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from threadline.cli.common import command, run_async, settings
from threadline.errors import InvalidAction

probe = typer.Typer()


@command(probe)
def act(what: str) -> None:
    if what == "invalid":
        raise InvalidAction("call c1 is not awaiting approval")
    if what == "value":
        raise ValueError("port must be a number")
    if what == "os":
        raise OSError("disk full")
    if what == "exit":
        raise typer.Exit(3)
    if what == "bug":
        raise KeyError("internal")
    typer.echo("done")


@pytest.mark.parametrize(
    ("what", "code", "line"),
    [
        ("ok", 0, "done"),
        ("invalid", 1, "error: call c1 is not awaiting approval"),
        ("value", 1, "error: ValueError: port must be a number"),
        ("os", 1, "error: OSError: disk full"),
        ("exit", 3, ""),
    ],
)
def test_errors_become_one_line_and_an_exit_code(what: str, code: int, line: str) -> None:
    result = CliRunner().invoke(probe, [what])
    assert result.exit_code == code
    assert result.output.strip() == line
    assert "Traceback" not in result.output


def test_a_bug_is_not_dressed_up_as_bad_input() -> None:
    result = CliRunner().invoke(probe, ["bug"])
    assert isinstance(result.exception, KeyError)  # a real bug keeps its traceback


def test_settings_are_read_when_a_command_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THREADLINE_STORE", "memory://")
    monkeypatch.delenv("THREADLINE_RELEASE", raising=False)
    assert settings().store == "memory://" and settings().release is False
    assert settings(locked=True).release is True  # --locked: release mode for this process
    monkeypatch.setenv("THREADLINE_STORE", "sqlite:///other.db")
    assert settings().store == "sqlite:///other.db"


def test_run_async_runs_a_coroutine_to_its_value() -> None:
    async def answer() -> int:
        return 42

    assert run_async(answer()) == 42
