"""Test models and helpers, shipped in the library so users test agents the way we do.

* `ScriptedModel`: answers from a list, in order (or resuming where a thread is).
* `FunctionModel`: answers with a function of the rendered context.
* `ReplayModel`: answers with the model outputs recorded in a thread.

Each answer may be a `ModelOutput`, a string (the model's text, verbatim, malformed or not),
or a dict / list (serialised as the JSON intent text). `intent(name, **args)` builds the
canonical intent dict.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import Any

from .errors import ModelError
from .events import ModelCall, Thread
from .models.base import Context, ModelOutput, ModelProfile

__all__ = ["FunctionModel", "ReplayModel", "ScriptedModel", "intent"]

Answer = ModelOutput | str | dict[str, Any] | list[Any] | BaseException


def intent(name: str, **arguments: Any) -> dict[str, Any]:
    """`{"intent": name, "arguments": {...}}`: the canonical JSON intent."""
    return {"intent": name, "arguments": arguments}


def _as_output(answer: Answer, model_id: str) -> ModelOutput:
    if isinstance(answer, BaseException):
        raise answer
    if isinstance(answer, ModelOutput):
        return answer
    text = answer if isinstance(answer, str) else json.dumps(answer)
    return ModelOutput(text=text, model=model_id, input_tokens=0, output_tokens=0)


class _TestModel:
    """What the test models share: a fixed id, a profile, and every context received."""

    def __init__(self, model_id: str, profile: ModelProfile | None) -> None:
        self._model_id = model_id
        self.profile = profile or ModelProfile.for_id(model_id)
        self.contexts: list[Context] = []

    @property
    def model_id(self) -> str:
        return self._model_id


class ScriptedModel(_TestModel):
    """Answers from a fixed list, in order; running past the end raises ModelError.

    `contexts` records every context it received, so tests can assert on what was sent.
    An exception in the list is raised instead of answering (to script provider failures).

    Args:
        follow_thread: never give a thread an answer its earlier model calls used: the
            answer is `answers[n]` with n the larger of this model's requests so far and
            the thread's own model calls (`Context.model_calls`). A thread continued by
            another process (`threadline run`, then `threadline respond`) gets its next
            answer, not the first again, while threads run one after another in one
            process still share the list in order. `scripted:answers.json` works this way.
    """

    def __init__(
        self,
        answers: Iterable[Answer],
        *,
        model_id: str = "scripted",
        delay: float = 0.0,
        profile: ModelProfile | None = None,
        follow_thread: bool = False,
    ) -> None:
        super().__init__(model_id, profile)
        self._answers = list(answers)
        self._delay = delay
        self.follow_thread = follow_thread

    @property
    def remaining(self) -> int:
        return len(self._answers) - len(self.contexts)

    async def request(self, context: Context) -> ModelOutput:
        index = len(self.contexts)
        if self.follow_thread:
            index = max(index, context.model_calls)
        self.contexts.append(context)
        if self._delay:
            await asyncio.sleep(self._delay)
        if index >= len(self._answers):
            raise ModelError(
                f"ScriptedModel ran out of answers: no answer #{index + 1} "
                f"(it holds {len(self._answers)})"
            )
        return _as_output(self._answers[index], self._model_id)


class FunctionModel(_TestModel):
    """Answers with `fn(context)`; the function may be sync or async."""

    def __init__(
        self,
        fn: Callable[[Context], Any],
        *,
        model_id: str = "function",
        profile: ModelProfile | None = None,
    ) -> None:
        super().__init__(model_id, profile)
        self._fn = fn

    async def request(self, context: Context) -> ModelOutput:
        self.contexts.append(context)
        answer = self._fn(context)
        if asyncio.iscoroutine(answer):
            answer = await answer
        return _as_output(answer, self._model_id)


_RECORDED = tuple(f.name for f in fields(ModelOutput) if f.name in ModelCall.model_fields)
"""What a `model_call` records of its `ModelOutput` under the same names: all but the text
(recorded as `output`). Derived from the two declarations, so a field added to both is
replayed without a change here."""


class ReplayModel(_TestModel):
    """Answers with the outputs recorded in `thread`'s `model_call` events, in order: each
    answer's text, tool calls, model, usage, cost and latency as recorded."""

    def __init__(self, thread: Thread) -> None:
        self._calls = [e for e in thread.events if isinstance(e, ModelCall)]
        super().__init__(self._calls[0].model if self._calls else "replay", None)

    async def request(self, context: Context) -> ModelOutput:
        index = len(self.contexts)
        if index >= len(self._calls):
            raise ModelError(f"ReplayModel has no recorded answer #{index + 1}")
        self.contexts.append(context)
        call = self._calls[index]
        return ModelOutput(text=call.output, **{name: getattr(call, name) for name in _RECORDED})
