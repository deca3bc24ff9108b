"""What a model call cost: a price table per million tokens that users can extend.

Prices change and differ between contracts, so the table is data, not code: the built-in
rows are list prices (USD per million tokens) at the time of writing; pass your own rows to
`PriceTable.extend` (or `THREADLINE_PRICES`, a JSON file read by `load_prices`) to override
or add models. A model without a row costs `None` (unknown), never a guessed number, and
local models cost 0.

Lookup is by exact model id first, then by the longest known prefix, so a dated snapshot
(`gpt-4.1-mini-2025-04-14`) is priced like its family (`gpt-4.1-mini`).

Prompt caching: a call's input tokens count every token of the prompt, cached or not; of
those, the ones written to the provider's prompt cache and the ones read from it are priced
at the row's cache rates (a row without them prices them as plain input: never a guessed
discount). Anthropic prices a write by the entry's lifetime: a 5-minute entry at 1.25x
input, a 1-hour one at 2x; a row's `cache_write_1h_per_mtok` prices the 1-hour part of the
writes (a row without it prices them at its cache write rate).
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
    """USD per million tokens: input, output, and the input written to and read from the
    provider's prompt cache (None: priced as plain input); `cache_write_1h_per_mtok`, the
    writes of 1-hour entries (Anthropic; None: priced as the other writes)."""

    input_per_mtok: float
    output_per_mtok: float
    cache_write_per_mtok: float | None = None
    cache_read_per_mtok: float | None = None
    cache_write_1h_per_mtok: float | None = None

    def cost(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_write: int = 0,
        cache_read: int = 0,
        cache_write_1h: int = 0,
    ) -> float:
        """USD for a call of `input_tokens` (every prompt token, `cache_write` and
        `cache_read` of them included; `cache_write_1h` of the writes made 1-hour entries)
        and `output_tokens`."""
        plain = max(input_tokens - cache_write - cache_read, 0)
        write = (
            self.input_per_mtok if self.cache_write_per_mtok is None else self.cache_write_per_mtok
        )
        write_1h = write if self.cache_write_1h_per_mtok is None else self.cache_write_1h_per_mtok
        read = self.input_per_mtok if self.cache_read_per_mtok is None else self.cache_read_per_mtok
        long_lived = min(cache_write_1h, cache_write)
        usd = plain * self.input_per_mtok + (cache_write - long_lived) * write
        usd += long_lived * write_1h + cache_read * read
        return (usd + output_tokens * self.output_per_mtok) / 1e6


DEFAULT_PRICES: Mapping[str, Price] = {
    # OpenAI: https://openai.com/api/pricing/ (input, output, cached input). A cache write
    # costs what input costs; a cached read is the model's listed "cached input" rate.
    "gpt-4.1": Price(2.00, 8.00, 2.00, 0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.40, 0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.10, 0.025),
    "gpt-4o": Price(2.50, 10.00, 2.50, 1.25),
    "gpt-4o-mini": Price(0.15, 0.60, 0.15, 0.075),
    "o4-mini": Price(1.10, 4.40, 1.10, 0.275),
    # Anthropic: https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching
    # ("Pricing"): a cache write is 1.25x the input rate for a 5-minute entry (what the
    # backend marks by default) and 2x for a 1-hour one (`cache_ttl="1h"`), a read 0.1x.
    "claude-opus-4": Price(15.00, 75.00, 18.75, 1.50, 30.00),
    "claude-sonnet-4": Price(3.00, 15.00, 3.75, 0.30, 6.00),
    "claude-3-7-sonnet": Price(3.00, 15.00, 3.75, 0.30, 6.00),
    "claude-3-5-haiku": Price(0.80, 4.00, 1.00, 0.08, 1.60),
    "claude-haiku-4-5": Price(1.00, 5.00, 1.25, 0.10, 2.00),
}
"""List prices (USD / million tokens: input, output, cache write, cache read, and for
Anthropic the 1-hour cache write). Override with `PriceTable.extend`."""


class PriceTable:
    """Model id -> `Price`. Immutable: `extend` returns a new table.

    Invariant: `cost` returns None for an unknown model, never an estimate.
    """

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self._prices: dict[str, Price] = dict(DEFAULT_PRICES if prices is None else prices)

    def extend(self, prices: Mapping[str, Price | tuple[float, ...]]) -> PriceTable:
        """A new table with `prices` added (overriding rows with the same id): a `Price`,
        or (input, output), (input, output, cache write, cache read) or those and the
        1-hour cache write, per million."""
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

    def cost(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_write: int = 0,
        cache_read: int = 0,
        cache_write_1h: int = 0,
    ) -> float | None:
        """USD for one call, or None if the model has no price (`Price.cost`: the cache
        counts are part of `input_tokens`, the 1-hour writes part of `cache_write`)."""
        price = self.price(model)
        if price is None:
            return None
        usd = price.cost(
            input_tokens,
            output_tokens,
            cache_write=cache_write,
            cache_read=cache_read,
            cache_write_1h=cache_write_1h,
        )
        return round(usd, 8)


def load_prices(path: str | Path, base: PriceTable | None = None) -> PriceTable:
    """Extend `base` (default prices) with a JSON file `{"model": [input, output], ...}`
    (USD per million tokens), or `[input, output, cache_write, cache_read]`, or those and
    the 1-hour cache write (`[..., cache_write_1h]`).

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
    rows: dict[str, Price | tuple[float, ...]] = {}
    for model, row in data.items():
        if (
            not isinstance(row, list | tuple)
            or len(row) not in (2, 4, 5)
            or not all(isinstance(x, int | float) and x >= 0 for x in row)
        ):
            raise ConfigError(
                f"price file {file}: {model!r} must be [input_usd_per_mtok, output_usd_per_mtok]"
                " or [input, output, cache_write, cache_read(, cache_write_1h)]"
            )
        rows[str(model)] = tuple(float(x) for x in row)
    return (base or PriceTable()).extend(rows)
