"""`threadline triggers list`: a config file's triggers, checked as `threadline serve
--config` checks them (never printing a secret); a server's are tested beside
`GET /v1/channels` in tests/server/test_channels.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from threadline.cli import _register, app

_register()

CONFIG = """
agents: [reviewer.py:agent]
triggers:
  - name: github-prs
    agent: reviewer
    secret_env: TEST_GITHUB_SECRET
    events: [pull_request]
    template: "Review PR #{{ payload.number }}"
    to: "slack:#reviews"
  - name: alerts
    agent: oncall
    signature: threadline
    secret_env: TEST_ALERTS_SECRET
    template: "{{ payload.alert }}"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "serve.yaml"
    path.write_text(CONFIG)
    return path


def test_a_config_files_triggers_are_listed_without_their_secrets(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_GITHUB_SECRET", "gh-secret-value")
    monkeypatch.setenv("TEST_ALERTS_SECRET", "alerts-secret-value")
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    table = runner.invoke(app, ["triggers", "list", "--config", str(config)])
    assert table.exit_code == 0, table.output
    assert "github-prs" in table.output and "slack:#reviews" in table.output
    assert "/v1/webhooks/triggers/alerts" in table.output
    listed = runner.invoke(app, ["triggers", "list", "--config", str(config), "--json"])
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert [(r["name"], r["agent"], r["signature"], r["events"], r["to"]) for r in rows] == [
        ("github-prs", "reviewer", "github", ["pull_request"], "slack:#reviews"),
        ("alerts", "oncall", "threadline", [], None),
    ]
    assert "secret-value" not in table.output + listed.output


def test_a_trigger_whose_secret_is_not_set_is_an_error(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_GITHUB_SECRET", "gh-secret-value")
    monkeypatch.delenv("TEST_ALERTS_SECRET", raising=False)
    result = CliRunner().invoke(app, ["triggers", "list", "--config", str(config)])
    assert result.exit_code != 0
    assert "TEST_ALERTS_SECRET" in result.output
    neither = CliRunner().invoke(app, ["triggers", "list"])
    assert neither.exit_code != 0 and "--config" in neither.output
