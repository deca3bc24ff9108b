"""Price table: exact and family lookups, unknown models, user extensions."""

from __future__ import annotations

import json

import pytest

from threadline.errors import ConfigError
from threadline.models.pricing import Price, PriceTable, load_prices


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


def test_price_file(tmp_path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"local-llama": [0, 0], "acme-1": [5, 10]}))
    table = load_prices(path)
    assert table.cost("acme-1", 1_000_000, 0) == pytest.approx(5.0)
    path.write_text(json.dumps({"acme-1": [5]}))
    with pytest.raises(ConfigError, match="acme-1"):
        load_prices(path)
    with pytest.raises(ConfigError, match="not JSON"):
        path.write_text("{")
        load_prices(path)
    with pytest.raises(ConfigError):
        load_prices(tmp_path / "missing.json")
