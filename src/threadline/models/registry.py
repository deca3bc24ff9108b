"""`THREADLINE_MODEL` -> a `Model`: `provider:model` resolved lazily (optional extras).

    local:smollm2            the embedded default (threadline[local])
    local:/path/model.gguf   any GGUF file
    openai:gpt-4.1-mini      OpenAI or any OpenAI-compatible server (OPENAI_BASE_URL)
    anthropic:claude-...     Anthropic
    scripted:answers.json    a ScriptedModel reading a JSON list of answers (demos, tests)
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError
from .base import Model

__all__ = ["resolve_model"]


def resolve_model(spec: str | None) -> Model:
    """Build the model named by `spec` (empty means the local default)."""
    spec = (spec or "").strip() or "local:smollm2"
    provider, sep, name = spec.partition(":")
    if not sep or not name:
        raise ConfigError(f"model {spec!r} must look like provider:model, e.g. local:smollm2")
    if provider == "scripted":
        from ..testing import ScriptedModel

        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"scripted model file {name!r} does not exist")
        try:
            answers = json.loads(path.read_text())
        except ValueError as exc:
            raise ConfigError(f"scripted model file {name}: not JSON: {exc}") from None
        if not isinstance(answers, list):
            raise ConfigError(f"scripted model file {name}: expected a JSON list of answers")
        return ScriptedModel(answers, model_id=f"scripted:{path.name}")
    raise ConfigError(f"unknown model provider {provider!r} in {spec!r}; use local, openai, "
                      "anthropic or scripted")
