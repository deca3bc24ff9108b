"""Model backends behind the one-method `Model` interface."""

from .base import Context, Message, Model, ModelOutput, ToolSpec

__all__ = ["Context", "Message", "Model", "ModelOutput", "ToolSpec"]
