"""Which channels run, from the environment; each channel's settings checked at start."""

from __future__ import annotations

import pytest
from pydantic_settings import SettingsConfigDict

from threadline.channels import open_channels, parse_target
from threadline.channels.email import EmailChannel
from threadline.channels.registry import ChannelSettings, parse_identities
from threadline.channels.slack import SlackChannel
from threadline.errors import ConfigError


def test_no_channels_unless_named() -> None:
    assert open_channels("", agents=["bot"]) == {}
    with pytest.raises(ConfigError, match="unknown channel 'pager'"):
        open_channels("slack, pager", agents=["bot"])


def test_slack_from_its_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="THREADLINE_SLACK_BOT_TOKEN"):
        open_channels("slack", agents=["bot"])
    monkeypatch.setenv("THREADLINE_SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("THREADLINE_SLACK_SIGNING_SECRET", "s")
    monkeypatch.setenv("THREADLINE_SLACK_RESPONDERS", "U1:alice, U2:bob")
    slack = open_channels("SLACK", agents=["bot"])["slack"]
    assert isinstance(slack, SlackChannel)
    assert slack.agent == "bot" and slack.responder("U2") == "bob" and slack.responder("U3") is None
    with pytest.raises(ConfigError, match="THREADLINE_SLACK_AGENT"):
        open_channels("slack", agents=["a", "b"])
    monkeypatch.setenv("THREADLINE_SLACK_AGENT", "c")
    with pytest.raises(ConfigError, match="not served"):
        open_channels("slack", agents=["a", "b"])


def test_email_from_its_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="THREADLINE_EMAIL_ADDRESS"):
        open_channels("email", agents=["bot"])
    monkeypatch.setenv("THREADLINE_EMAIL_ADDRESS", "Bot <Bot@Example.com>")
    monkeypatch.setenv("THREADLINE_EMAIL_SECRET", "0123456789abcdef0123")
    monkeypatch.setenv("THREADLINE_EMAIL_LISTEN", "127.0.0.1:2525")
    monkeypatch.setenv("THREADLINE_EMAIL_RESPONDERS", "Alice@Example.com:alice")
    monkeypatch.setenv("THREADLINE_EMAIL_SENDERS", "*@example.com")
    email = open_channels("email", agents=["bot"])["email"]
    assert isinstance(email, EmailChannel)
    assert (email.address, email.listen) == ("bot@example.com", ("127.0.0.1", 2525))
    assert email.responder("alice@example.com") == "alice"
    assert email.may_launch("amy@example.com") and not email.may_launch("amy@evil.org")
    monkeypatch.setenv("THREADLINE_EMAIL_LISTEN", "2525")
    with pytest.raises(ConfigError, match="host:port"):
        open_channels("email", agents=["bot"])
    with pytest.raises(ConfigError, match="set THREADLINE_EMAIL_AGENT"):
        open_channels("email", agents=["bot", "ops"])


def test_every_channel_names_its_own_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    class PagerSettings(ChannelSettings):
        model_config = SettingsConfigDict(env_prefix="THREADLINE_PAGER_", extra="ignore")

    monkeypatch.setenv("THREADLINE_PAGER_RESPONDERS", "P1:alice")
    pager = PagerSettings()
    assert pager.launched_agent(["bot"]) == "bot" and pager.responder_names() == {"P1": "alice"}
    with pytest.raises(ConfigError, match="set THREADLINE_PAGER_AGENT: which agent"):
        pager.launched_agent(["bot", "ops"])
    monkeypatch.setenv("THREADLINE_PAGER_AGENT", "billing")
    with pytest.raises(ConfigError, match=r"THREADLINE_PAGER_AGENT=billing is not served here"):
        PagerSettings().launched_agent(["bot", "ops"])
    assert PagerSettings().launched_agent(["billing"]) == "billing"
    monkeypatch.setenv("THREADLINE_PAGER_RESPONDERS", "alice")
    with pytest.raises(ConfigError, match="THREADLINE_PAGER_RESPONDERS: 'alice'"):
        PagerSettings().responder_names()


def test_reply_tokens_are_bound_to_thread_event_and_recipient() -> None:
    email = EmailChannel(address="bot@example.com", secret="0123456789abcdef", agent="bot")
    token = email.token("th_1", 4, "Amy@Example.com")
    address = email.reply_address(token)
    assert address == f"bot+{token}@example.com"
    assert email.parse_token(address) == token
    assert email.parse_token("bot@example.com") is None
    assert email.parse_token(f"other+{token}@example.com") is None
    assert email.check_token(token, "th_1", "amy@example.com") == 4
    assert email.check_token(token, "th_1", "bob@example.com") is None  # forwarded
    assert email.check_token(token, "th_2", "amy@example.com") is None
    assert email.check_token(token.replace("4-", "5-"), "th_1", "amy@example.com") is None
    with pytest.raises(ConfigError, match="16"):
        EmailChannel(address="bot@example.com", secret="short", agent="bot")


def test_identities_and_targets_are_checked() -> None:
    assert parse_identities("", "X") == {}
    with pytest.raises(ConfigError, match="THREADLINE_X: 'alice' must be identity:name"):
        parse_identities("alice", "THREADLINE_X")
    assert parse_target("origin") == ("origin", "")
    assert parse_target(" slack:#oncall ") == ("slack", "#oncall")
    with pytest.raises(ConfigError, match="channel:address"):
        parse_target("slack")
