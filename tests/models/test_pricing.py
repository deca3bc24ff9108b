"""Price table: exact and family lookups, unknown models, user extensions."""

from __future__ import annotations

import json

import pytest

from threadline.errors import ConfigError
from threadline.models.pricing import DEFAULT_PRICES, Price, PriceTable, load_prices


def test_exact_and_snapshot_prices() -> None:
    table = PriceTable()
    assert table.cost("gpt-4.1-mini", 1_000_000, 0) == pytest.approx(0.40)
    # a dated snapshot is priced like its family, by the longest matching prefix
    assert table.price("gpt-4.1-mini-2025-04-14") == table.price("gpt-4.1-mini")
    assert table.price("gpt-4.1-2025-04-14") == table.price("gpt-4.1")


def test_unknown_model_has_no_cost() -> None:
    assert PriceTable().cost("my-finetune", 10, 10) is None


def test_users_extend_and_override() -> None:
    table = PriceTable().extend({"my-finetune": (1.0, 2.0), "gpt-4.1-mini": Price(0.1, 0.1)})
    assert table.cost("my-finetune", 1_000_000, 1_000_000) == pytest.approx(3.0)
    assert table.cost("gpt-4.1-mini", 1_000_000, 0) == pytest.approx(0.1)
    assert PriceTable().cost("my-finetune", 1, 1) is None  # the original is unchanged


def test_prompt_cache_tokens_are_priced_at_their_rates() -> None:
    """The cache counts are part of the input: what is left is priced as input, the cache's
    writes and reads at the row's rates, or as input when the row has none."""
    table = PriceTable()
    # claude-sonnet-4: 3 input, 15 output, 3.75 cache write, 0.30 cache read
    usd = table.cost("claude-sonnet-4-6", 1_000_000, 0, cache_write=200_000, cache_read=700_000)
    assert usd == pytest.approx(0.1 * 3 + 0.2 * 3.75 + 0.7 * 0.30)
    # gpt-4.1-mini: cached input 0.10 of 0.40; OpenAI charges no more to write the cache
    assert table.cost("gpt-4.1-mini", 1_000_000, 0, cache_read=500_000) == pytest.approx(0.25)
    assert table.cost("gpt-4.1-mini", 1_000_000, 0, cache_write=500_000) == pytest.approx(0.40)
    mine = table.extend({"my-finetune": (1.0, 2.0)})  # no cache rates: plain input
    assert mine.cost("my-finetune", 1_000_000, 0, cache_read=1_000_000) == pytest.approx(1.0)


def test_every_built_in_row_has_its_providers_cache_rates() -> None:
    """Anthropic: a cache write is 1.25x input (5-minute entry) or 2x (1-hour entry), a read
    0.1x; OpenAI: a write is input, a read the listed cached-input rate, below input (no
    1-hour entries)."""
    for model, price in DEFAULT_PRICES.items():
        assert price.cache_write_per_mtok is not None and price.cache_read_per_mtok is not None
        if model.startswith("claude"):
            assert price.cache_write_per_mtok == pytest.approx(1.25 * price.input_per_mtok)
            assert price.cache_write_1h_per_mtok == pytest.approx(2 * price.input_per_mtok)
            assert price.cache_read_per_mtok == pytest.approx(0.1 * price.input_per_mtok)
        else:
            assert price.cache_write_per_mtok == price.input_per_mtok
            assert price.cache_write_1h_per_mtok is None
            assert 0 < price.cache_read_per_mtok < price.input_per_mtok


def test_one_hour_cache_writes_are_priced_at_their_own_rate() -> None:
    """Of the writes, the 1-hour ones at the row's 1-hour rate; a row without one prices
    them as its other writes, and one without cache rates as plain input."""
    table = PriceTable()
    # claude-sonnet-4: 3 input, 3.75 a 5-minute write, 6.00 a 1-hour write
    usd = table.cost("claude-sonnet-4-6", 1_000_000, 0, cache_write=600_000, cache_write_1h=400_000)
    assert usd == pytest.approx(0.4 * 3 + 0.2 * 3.75 + 0.4 * 6.00)
    mine = table.extend({"acme": (1.0, 2.0, 1.5, 0.1), "plain": (1.0, 2.0)})
    assert mine.cost("acme", 1_000_000, 0, cache_write=1_000_000, cache_write_1h=1_000_000) == (
        pytest.approx(1.5)
    )
    assert mine.cost("plain", 1_000_000, 0, cache_write=1_000_000, cache_write_1h=1_000_000) == (
        pytest.approx(1.0)
    )
    # More 1-hour writes than writes (a bad count) are never priced twice.
    assert table.cost("claude-sonnet-4-6", 100, 0, cache_write=100, cache_write_1h=500) == (
        pytest.approx(100 * 6.00 / 1e6)
    )


def test_price_file(tmp_path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"local-llama": [0, 0], "acme-1": [5, 10]}))
    table = load_prices(path)
    assert table.cost("acme-1", 1_000_000, 0) == pytest.approx(5.0)
    path.write_text(json.dumps({"acme-2": [5, 10, 6.25, 0.5]}))  # with cache write, read
    assert load_prices(path).price("acme-2") == Price(5, 10, 6.25, 0.5)
    path.write_text(json.dumps({"acme-3": [5, 10, 6.25, 0.5, 10]}))  # and the 1-hour write
    assert load_prices(path).price("acme-3") == Price(5, 10, 6.25, 0.5, 10)
    path.write_text(json.dumps({"acme-1": [5]}))
    with pytest.raises(ConfigError, match="acme-1"):
        load_prices(path)
    with pytest.raises(ConfigError, match="not JSON"):
        path.write_text("{")
        load_prices(path)
    with pytest.raises(ConfigError):
        load_prices(tmp_path / "missing.json")
