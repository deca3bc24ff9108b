"""Model backends behind the one-method `Model` interface.

The provider backends (`openai`, `anthropic`, `local`) import their SDKs lazily; get one
with `resolve_model("provider:model")`.
"""

from .base import Context, Message, Model, ModelOutput, ModelProfile, ToolSpec
from .pricing import DEFAULT_PRICES, Price, PriceTable, load_prices
from .registry import resolve_model
from .resilience import CircuitBreaker, FallbackModel, ResilientModel, RetryPolicy

__all__ = [
    "DEFAULT_PRICES",
    "CircuitBreaker",
    "Context",
    "FallbackModel",
    "Message",
    "Model",
    "ModelOutput",
    "ModelProfile",
    "Price",
    "PriceTable",
    "ResilientModel",
    "RetryPolicy",
    "ToolSpec",
    "load_prices",
    "resolve_model",
]
