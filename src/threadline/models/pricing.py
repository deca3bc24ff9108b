"""What a model call cost: a price table per million tokens that users can extend.

Prices change and differ between contracts, so the table is data, not code: the built-in
rows are list prices (USD per million tokens) at the time of writing; pass your own rows to
`PriceTable.extend` (or `THREADLINE_PRICES`, a JSON file read by `load_prices`) to override
or add models. A model without a row costs `None` (unknown), never a guessed number, and
local models cost 0.

Lookup is by exact model id first, then by the longest known prefix, so a dated snapshot
(`gpt-4.1-mini-2025-04-14`) is priced like its family (`gpt-4.1-mini`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

__all__ = ["DEFAULT_PRICES", "Price", "PriceTable", "load_prices"]


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million input and output tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


DEFAULT_PRICES: Mapping[str, Price] = {
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "o4-mini": Price(1.10, 4.40),
    "claude-opus-4": Price(15.00, 75.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-3-7-sonnet": Price(3.00, 15.00),
    "claude-3-5-haiku": Price(0.80, 4.00),
    "claude-haiku-4-5": Price(1.00, 5.00),
}
"""List prices (USD / million tokens). Override with `PriceTable.extend`."""


class PriceTable:
    """Model id -> `Price`. Immutable: `extend` returns a new table.

    Invariant: `cost` returns None for an unknown model, never an estimate.
    """

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self._prices: dict[str, Price] = dict(DEFAULT_PRICES if prices is None else prices)

    def extend(self, prices: Mapping[str, Price | tuple[float, float]]) -> PriceTable:
        """A new table with `prices` added (overriding rows with the same id)."""
        merged = dict(self._prices)
        for model, price in prices.items():
            merged[model] = price if isinstance(price, Price) else Price(*price)
        return PriceTable(merged)

    def price(self, model: str) -> Price | None:
        """The row for `model`: exact id, else the longest prefix followed by `-`."""
        if model in self._prices:
            return self._prices[model]
        best = None
        for known in self._prices:
            if model.startswith(known + "-") and (best is None or len(known) > len(best)):
                best = known
        return self._prices[best] if best is not None else None

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """USD for one call, or None if the model has no price."""
        price = self.price(model)
        return None if price is None else round(price.cost(input_tokens, output_tokens), 8)


def load_prices(path: str | Path, base: PriceTable | None = None) -> PriceTable:
    """Extend `base` (default prices) with a JSON file `{"model": [input, output], ...}`.

    Raises:
        ConfigError: the file is missing or not in that shape.
    """
    file = Path(path)
    try:
        data = json.loads(file.read_text())
    except OSError as exc:
        raise ConfigError(f"price file {file}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"price file {file} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"price file {file}: expected an object of model -> [input, output]")
    rows: dict[str, Price | tuple[float, float]] = {}
    for model, row in data.items():
        if (
            not isinstance(row, list | tuple)
            or len(row) != 2
            or not all(isinstance(x, int | float) and x >= 0 for x in row)
        ):
            raise ConfigError(
                f"price file {file}: {model!r} must be [input_usd_per_mtok, output_usd_per_mtok]"
            )
        rows[str(model)] = (float(row[0]), float(row[1]))
    return (base or PriceTable()).extend(rows)
