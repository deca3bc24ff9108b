"""channels/routing.py: a thread answers where it came from, unless its agent routes a kind
of notice elsewhere; a target on a channel not running here is skipped, never an error."""

from __future__ import annotations

import logging

import pytest

from threadline.channels.base import Destination
from threadline.channels.memory import MemoryChannel
from threadline.channels.routing import destinations, origin, parse_target
from threadline.errors import ConfigError
from threadline.events import Thread

CHANNELS = {"slack": MemoryChannel("slack"), "email": MemoryChannel("email")}
SLACK_THREAD = {"channel": "C1", "thread_ts": "1700.1"}


def _thread(**metadata: object) -> Thread:
    return Thread("th_r", "support", metadata=dict(metadata))


def test_targets_are_origin_or_channel_address() -> None:
    assert parse_target(" origin ") == ("origin", "")
    assert parse_target("slack:#oncall") == ("slack", "#oncall")
    assert parse_target("email:ops@example.com") == ("email", "ops@example.com")
    for bad in ("slack", "slack:", ":#oncall", ""):
        with pytest.raises(ConfigError, match="must be 'origin' or 'channel:address'"):
            parse_target(bad)


def test_a_thread_answers_in_the_conversation_it_came_from() -> None:
    came = _thread(channel="slack", conversation=SLACK_THREAD)
    assert origin(came, CHANNELS) == [Destination(channel="slack", conversation=SLACK_THREAD)]
    scheduled = _thread(channel="cron", reply_to=["slack:#reports", "origin", "email:a@x.org"])
    assert [(d.channel, d.address) for d in origin(scheduled, CHANNELS)] == [
        ("slack", "#reports"),
        ("email", "a@x.org"),
    ]
    assert origin(_thread(channel="api"), CHANNELS) == []  # nowhere beyond the thread


def test_routes_send_a_kind_elsewhere_and_origin_keeps_the_origin() -> None:
    came = _thread(channel="slack", conversation=SLACK_THREAD)
    routes = {"approval": ["email:oncall@x.org", "origin", "email:oncall@x.org"]}
    approval = destinations(came, "approval", routes, CHANNELS)
    assert [(d.channel, d.address) for d in approval] == [
        ("email", "oncall@x.org"),  # once, though routed twice
        ("slack", ""),
    ]
    answer = destinations(came, "answer", routes, CHANNELS)  # not routed: the origin
    assert answer == [Destination(channel="slack", conversation=SLACK_THREAD)]


def test_targets_not_running_here_are_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    only_email = {"email": CHANNELS["email"]}
    came = _thread(channel="slack", conversation=SLACK_THREAD)
    with caplog.at_level(logging.INFO, logger="threadline.channels"):
        assert origin(came, only_email) == []
        routed = destinations(
            came, "answer", {"answer": ["slack:#x", "bad", "email:b@x.org"]}, only_email
        )
    assert [(d.channel, d.address) for d in routed] == [("email", "b@x.org")]
    assert "not running here" in caplog.text and "route 'bad' skipped" in caplog.text
