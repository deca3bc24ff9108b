"""Token counting: exact where we can, a documented overestimate where we cannot.

Three counters, chosen per agent by `ContextSettings.counter_for(model)`:

* `BPECounter("o200k_base" | "cl100k_base")`: OpenAI's encodings, from the `bpe-openai`
  package, which embeds its BPE tables in the wheel. Unlike `tiktoken` it never downloads
  anything, so counting works on a machine without network access.
* `CallableCounter(fn)`: a model's own tokenizer, when its `ModelProfile.tokenizer` is a
  function `text -> int` (the local GGUF backend's is; so is an OpenAI-compatible server's
  count endpoint, `models.server_tokens`).
* `ApproxCounter()`: `ceil(utf8_bytes / 3)`. Real tokenizers average about 4 bytes per
  token on English prose and about 3 on JSON and code, so this deliberately overestimates:
  a budget computed with it may waste a little room but never overflows a window.

Invariants:
    * `count(text)` is a pure function of `text` for a given counter (so counts can be
      cached per event and reused across renders).
    * The BPE and approximate counters never touch the network or the file system after the
      tables are loaded; a model's own function asks what the model runs in (the local
      model's child process, a server's count endpoint on its URL).
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..models.base import Model, ModelProfile

__all__ = [
    "ApproxCounter",
    "BPECounter",
    "CallableCounter",
    "CountCache",
    "TokenCounter",
    "counter_for_model",
    "counter_for_profile",
    "counter_from",
]

_CHUNK = 100_000
"""bpe-openai refuses inputs over 1M characters or 200k tokens; longer text is split on
line breaks into chunks of about this many characters (BPE never merges across a newline
followed by text, so the split changes counts by at most a token per chunk)."""


@runtime_checkable
class TokenCounter(Protocol):
    """Counts tokens of text. `name` identifies the tokenizer (it keys caches)."""

    @property
    def name(self) -> str: ...

    def count(self, text: str) -> int: ...


@functools.cache
def _encoding(name: str) -> Any:
    # The tables are immutable; loading them once per process is a cache, not state.
    import warnings

    with warnings.catch_warnings():  # bpe-openai reads its tables with a deprecated API
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return bpe_openai.get_encoding(name)
    except Exception as exc:
        known = ", ".join(bpe_openai.list_encoding_names())
        raise ConfigError(f"unknown BPE encoding {name!r}; known: {known}") from exc


class BPECounter:
    """Exact counts for an OpenAI encoding (`o200k_base`, `cl100k_base`, ...)."""

    def __init__(self, encoding: str = "o200k_base") -> None:
        self._name = encoding
        self._enc = _encoding(encoding)

    @property
    def name(self) -> str:
        return self._name

    def count(self, text: str) -> int:
        if not text:
            return 0
        if len(text) <= _CHUNK:
            return len(self._enc.encode_ordinary(text))
        return sum(len(self._enc.encode_ordinary(part)) for part in _chunks(text))

    def __repr__(self) -> str:
        return f"BPECounter({self._name!r})"


class CallableCounter:
    """Wraps a model's own `count_tokens(text)` (e.g. a GGUF model's tokenizer)."""

    def __init__(self, fn: Callable[[str], int], name: str) -> None:
        self._fn = fn
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def count(self, text: str) -> int:
        return int(self._fn(text)) if text else 0


class ApproxCounter:
    """`ceil(utf8_bytes / bytes_per_token)`: a deliberate overestimate (see module doc)."""

    def __init__(self, bytes_per_token: float = 3.0) -> None:
        if bytes_per_token <= 0:
            raise ConfigError("bytes_per_token must be positive")
        self._bpt = bytes_per_token
        self._name = f"approx/{bytes_per_token:g}"  # it keys every cached block

    @property
    def name(self) -> str:
        return self._name

    def count(self, text: str) -> int:
        return self.tokens_for(self.size(text))

    def size(self, text: str) -> int:
        """`text`'s UTF-8 bytes: what the count is made of, a sum over any split of the
        text (so a joined body is counted from its parts' sizes, `incremental`)."""
        return len(text.encode("utf-8"))

    def tokens_for(self, size: int) -> int:
        """The count of a text of `size` UTF-8 bytes."""
        return math.ceil(size / self._bpt)


def _chunks(text: str) -> list[str]:
    out: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + _CHUNK, len(text))
        if end < len(text):
            cut = text.rfind("\n", start + _CHUNK // 2, end)
            if cut > start:
                end = cut
        out.append(text[start:end])
        start = end
    return out


def counter_for_profile(profile: ModelProfile, model_id: str = "") -> TokenCounter:
    """The counter a model's profile names: its own tokenizer, a BPE encoding, or the
    approximation when it names none."""
    tokenizer = profile.tokenizer
    if callable(tokenizer):
        return CallableCounter(tokenizer, f"model:{model_id}")
    if tokenizer == "approx" or not tokenizer:
        return ApproxCounter()
    return BPECounter(tokenizer)


def counter_for_model(model: Model | str) -> TokenCounter:
    """The best counter for a model object (its `profile`) or a `provider:model` id."""
    if isinstance(model, str):
        # Imported here: `decide`'s import closure stays free of the model package.
        from ..models.base import ModelProfile

        return counter_for_profile(ModelProfile.for_id(model), model)
    return counter_for_profile(model.profile, model.model_id)


def counter_from(spec: object) -> TokenCounter:
    """The counter a `ContextSettings.tokenizer` value names: a `TokenCounter`, a callable
    `text -> int`, an encoding name (`"o200k_base"`) or `"approx"`.

    Raises:
        ConfigError: `spec` is none of those, or names an unknown encoding.
    """
    if isinstance(spec, TokenCounter):
        return spec
    if callable(spec):
        return CallableCounter(spec, f"callable:{getattr(spec, '__name__', 'fn')}")
    if isinstance(spec, str):
        if spec == "approx":
            return ApproxCounter()
        return BPECounter(spec)
    raise ConfigError(
        "ContextSettings.tokenizer must be a TokenCounter, a callable or an encoding name"
    )


class CountCache:
    """A bounded LRU map from a key to a value (rendered blocks and their token counts).

    Keys are built by the caller from facts that never change for a frozen event (thread
    id, seq, counter name, rendering variant); `get` takes the event too and checks it is
    equal to the one cached, so a different thread reusing an id is never served a stale
    block.
    """

    def __init__(self, maxsize: int = 100_000) -> None:
        self._data: OrderedDict[Hashable, tuple[Any, Any]] = OrderedDict()
        self._maxsize = maxsize
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, owner: Any) -> Any | None:
        entry = self._data.get(key)
        if entry is None:
            self.misses += 1
            return None
        cached_owner, value = entry
        if cached_owner is not owner and cached_owner != owner:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: Hashable, owner: Any, value: Any) -> None:
        self._data[key] = (owner, value)
        self._data.move_to_end(key)
        if len(self._data) > self._maxsize:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)
