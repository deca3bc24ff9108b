"""Rate limits as configuration (`threadline.rate_config`): the environment syntax, the
errors that say what is expected, and which limit applies to a model id or a tool."""

from __future__ import annotations

import pytest

from threadline.errors import ConfigError
from threadline.rate_config import Rate, RateLimits


def test_rates_and_limits_parse_from_the_environment_syntax() -> None:
    assert Rate.parse("5/2s") == Rate(5, 2.0)
    assert Rate.parse("10/s") == Rate(10, 1.0)
    assert Rate.parse("500/min") == Rate.parse("500/1m") == Rate(500, 60.0)
    assert Rate.parse(" 3600 / 1h ") == Rate(3600, 3600.0)
    limits = RateLimits.parse(
        "model:openai=500/1m, tokens:openai=200000/1m; model:openai:gpt-4.1-mini=50/1m "
        "tool:search=5/1s"
    )
    assert limits.models == {"openai": Rate(500, 60.0), "openai:gpt-4.1-mini": Rate(50, 60.0)}
    assert limits.tokens == {"openai": Rate(200000, 60.0)}
    assert limits.tools == {"search": Rate(5, 1.0)}
    assert not RateLimits.parse("  ") and limits


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("openai=5/2s", "KIND:NAME=RATE"),
        ("models:openai=5/2s", "KIND:NAME=RATE"),
        ("model:=5/2s", "KIND:NAME=RATE"),
        ("model:openai=5 per 2s", "is not LIMIT/INTERVAL"),
        ("model:openai=5/2d", "is not LIMIT/INTERVAL"),
        ("model:openai=0/2s", "at least 1"),
        ("model:openai=5/0s", "positive"),
        ("tool:search=6000000/1m", "100000/1s"),
    ],
)
def test_malformed_limits_are_refused_saying_what_is_expected(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        RateLimits.parse(text)


def test_a_model_id_finds_its_own_limit_before_its_provider() -> None:
    limits = RateLimits(models={"openai": Rate(500), "openai:gpt-4.1-mini": Rate(50)})
    assert limits.find("model", "openai:gpt-4.1-mini") == ("model:openai:gpt-4.1-mini", Rate(50))
    assert limits.find("model", "openai:gpt-4o,anthropic:claude") == ("model:openai", Rate(500))
    assert limits.find("tool", "search") is None
    over = RateLimits(tools={"search": Rate(5)}).over(limits)
    assert over.models == limits.models and over.tools == {"search": Rate(5)}


def test_hold_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="hold must be positive"):
        RateLimits(hold=0)
