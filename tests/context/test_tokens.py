"""Token counting: exact BPE counts offline, model tokenizers, the approximation, caching."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from threadline import Agent, ContextSettings
from threadline.context.tokens import (
    ApproxCounter,
    BPECounter,
    CallableCounter,
    CountCache,
    counter_for_model,
)
from threadline.errors import ConfigError
from threadline.models.base import ModelProfile
from threadline.testing import ScriptedModel


def test_bpe_counts_match_known_encodings() -> None:
    assert BPECounter("o200k_base").count("hello world") == 2
    assert BPECounter("cl100k_base").count("hello world") == 2
    assert BPECounter("o200k_base").count("") == 0
    # Different vocabularies give different counts for the same text.
    text = "Threadline renders thräds of événements into 上下文 windows." * 20
    assert BPECounter("o200k_base").count(text) != BPECounter("cl100k_base").count(text)


def test_text_longer_than_the_tokenizer_limit_is_counted_in_chunks() -> None:
    line = "the quick brown fox jumps over the lazy dog\n"
    text = line * 30_000  # 1.3M characters: bpe-openai alone refuses this
    counter = BPECounter("o200k_base")
    per_line = counter.count(line)
    assert abs(counter.count(text) - per_line * 30_000) <= 30


def test_counting_works_with_the_network_off() -> None:
    """No download at run time: a subprocess whose sockets all fail still counts."""
    code = textwrap.dedent("""
        import socket
        def refuse(*a, **k):
            raise OSError("network is off in this test")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from threadline.context.tokens import BPECounter
        print(BPECounter("o200k_base").count("hello world"),
              BPECounter("cl100k_base").count("hello world"))
    """)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        TIKTOKEN_CACHE_DIR="/nonexistent",
        HF_HUB_OFFLINE="1",
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "2"]


class _LocalModel:
    """A model with its own tokenizer (declared in its profile, like models/local.py)."""

    model_id = "local:tiny"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    @property
    def profile(self) -> ModelProfile:
        return ModelProfile(tokenizer=self.count_tokens)

    async def request(self, context):  # pragma: no cover - never called
        raise NotImplementedError


def test_the_model_tokenizer_is_used_when_the_model_has_one() -> None:
    counter = counter_for_model(_LocalModel())
    assert isinstance(counter, CallableCounter)
    assert counter.count("one two three") == 3
    agent = Agent("a", model=_LocalModel())  # type: ignore[arg-type]
    assert agent.context.counter_for(agent.model).count("a b") == 2


def test_openai_ids_map_to_their_encoding_and_others_to_the_approximation() -> None:
    assert counter_for_model("openai:gpt-4.1-mini").name == "o200k_base"
    assert counter_for_model("openai:gpt-4-turbo").name == "cl100k_base"
    assert isinstance(counter_for_model(ScriptedModel([])), ApproxCounter)
    assert ContextSettings(tokenizer="cl100k_base").counter_for(None).name == "cl100k_base"
    with pytest.raises(ConfigError, match="unknown BPE encoding"):
        ContextSettings(tokenizer="nope_base").counter_for(None)


def test_the_approximation_overestimates_real_counts() -> None:
    samples = [
        "Please book me a flight from New York to Seattle on May 20th.",
        '{"reservation_id": "ZFA04Y", "flights": [{"flight_number": "HAT001"}]}',
        "def fold(events):\n    return reduce(apply, events, State())\n",
    ]
    exact = BPECounter("o200k_base")
    for text in samples:
        assert ApproxCounter().count(text) >= exact.count(text)


def test_count_cache_is_bounded_and_checks_the_owner() -> None:
    cache = CountCache(maxsize=2)
    cache.put("k1", "event-a", 5)
    assert cache.get("k1", "event-a") == 5
    assert cache.get("k1", "event-b") is None  # same key, different event: not served
    cache.put("k2", "x", 1)
    cache.put("k3", "y", 1)
    assert len(cache) == 2 and cache.get("k1", "event-a") is None
