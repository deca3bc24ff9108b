"""What a provider says about its own counts, kept on the bound model: a correction of the
renderer's token counts learned from `usage.prompt_tokens`, and a window learned from a
refusal.

The renderer counts a request with the model's tokenizer, but a server may add text of its
own that no count of the request sees: llama-cpp-python's `chatml-function-calling` chat
template writes the tools and every tool-call turn in its own words, ~10% more prompt
tokens than the renderer counts in `tools` mode (docs/models.md has the numbers). A
`Calibration` compares, per answer, the provider's `usage.prompt_tokens` with the
renderer's count of that same request (`Context.input_tokens`) and keeps a smoothed ratio;
the renderer fits the context into `window / factor` instead of `window`, so the request
the server counts still fits.

Where it lives, and why: on the model object of one process, never in the thread. The
calibration decides only how much of the thread fits (which events are verbatim, reduced
or compacted); it never changes a block's text, and a compaction it causes is stored as a
`compacted` event like any other. Replay re-derives decisions from the recorded answers
and renders nothing, so a calibration cannot make it diverge. A fresh process (a worker
after a takeover, `threadline render`) starts uncalibrated and learns again from the next
answer: it may show more history than a calibrated one would send, never a different text
for the same layout.

Invariants:
    * `factor` is in `[1, MAX_FACTOR]`: the correction only ever shrinks the budget (a
      provider that counts fewer tokens than the renderer leaves it at 1);
    * one answer moves `factor` by at most `WEIGHT * (MAX_FACTOR - 1)` once `SETTLED`
      answers were seen (before that, the mean of those seen, each clamped);
    * `version` changes whenever what the renderer reads (`scale`, `window`) changes, and
      only then: the factor the renderer uses is rounded to `1/STEP`, so renderings stay
      the same (and cacheable) between small moves.
"""

from __future__ import annotations

import logging
import math
import re
import threading

from ..errors import ContextOverflow, InvalidRequest

__all__ = [
    "MAX_FACTOR",
    "SETTLED",
    "STEP",
    "WEIGHT",
    "Calibration",
    "overflow",
    "window_refusal",
]

log = logging.getLogger("threadline.models.calibration")

MAX_FACTOR = 1.5
"""The largest correction one answer can suggest, and the largest kept."""

WEIGHT = 0.25
"""The weight of a new answer in the moving average once it has settled."""

SETTLED = 4
"""Answers averaged plainly before the moving average takes over (the first answer alone
sets the first correction, so a second call is already corrected)."""

STEP = 64
"""`scale` is `factor` rounded up to a multiple of 1/STEP."""


class Calibration:
    """A bound model's learned correction and window (see the module docstring).

    Attributes:
        factor: the smoothed ratio `reported / counted`, in `[1, MAX_FACTOR]`.
        answers: how many answers were observed.
        window: the window the server said it has, when it refused a request for
            exceeding it (None: never refused).
        version: changes when `scale` or `window` does; the renderer re-sizes its budget
            then.
    """

    def __init__(self) -> None:
        self.factor = 1.0
        self.answers = 0
        self.window: int | None = None
        self.version = 0
        self._lock = threading.Lock()  # answers of one model may arrive on several threads

    @property
    def scale(self) -> float:
        """The factor the renderer applies: `factor` rounded up to a multiple of 1/STEP."""
        return math.ceil(self.factor * STEP - 1e-9) / STEP

    def observe(self, counted: int | None, reported: int) -> bool:
        """Take one answer: the renderer `counted` the request, the provider `reported`.

        Nothing is learned when either is unknown or zero (a custom rendering has no
        count; a provider that reports no usage says 0). Returns whether `version` moved.
        """
        if not counted or counted <= 0 or reported <= 0:
            return False
        ratio = min(MAX_FACTOR, max(1.0, reported / counted))
        with self._lock:
            before = self.scale
            self.answers += 1
            if self.answers <= SETTLED:
                self.factor += (ratio - self.factor) / self.answers
            else:
                self.factor += WEIGHT * (ratio - self.factor)
            self.factor = min(MAX_FACTOR, max(1.0, self.factor))
            if self.scale != before:
                self.version += 1
                return True
            return False

    def refused(self, window: int) -> bool:
        """The server refused a request and said its window is `window`: kept when lower
        than any window learned before. Returns whether `version` moved."""
        if window <= 0:
            return False
        with self._lock:
            if self.window is not None and self.window <= window:
                return False
            self.window = window
            self.version += 1
            return True

    def fit(self, window: int, reserved: int) -> int:
        """The window the renderer plans in, for a model window of `window` tokens of
        which `reserved` are the output's: the learned window when lower, and the room
        for the prompt divided by `scale` (what the renderer counts as `n` the provider
        counts as about `n * scale`)."""
        if self.window is not None:
            window = min(window, self.window)
        room = window - reserved
        if room <= 0 or self.scale == 1.0:
            return window
        return reserved + math.floor(room / self.scale)

    def __repr__(self) -> str:
        return (
            f"Calibration(factor={self.factor:.4f}, answers={self.answers}, window={self.window})"
        )


_WINDOW = (
    re.compile(r"maximum context length is (\d+) tokens"),  # OpenAI, vLLM, llama-cpp-python
    re.compile(r"exceed context window of (\d+)"),  # llama-cpp-python's own ValueError
    re.compile(r'"n_ctx"\s*:\s*(\d+)'),  # llama.cpp's llama-server (exceed_context_size_error)
    re.compile(r"prompt is too long: \d+ tokens > (\d+) maximum"),  # Anthropic
)
_PROMPT = (
    re.compile(r"\((\d+) in the messages"),
    re.compile(r"Requested tokens \((\d+)\)"),
    re.compile(r'"n_prompt_tokens"\s*:\s*(\d+)'),
    re.compile(r"prompt is too long: (\d+) tokens"),
)


def window_refusal(message: str) -> tuple[int, int | None] | None:
    """(the window, the prompt tokens it counted, if it said) when `message` is a
    server's refusal of a request for exceeding its context window; else None."""
    window = _first(_WINDOW, message)
    if window is None:
        return None
    return window, _first(_PROMPT, message)


def _first(patterns: tuple[re.Pattern[str], ...], message: str) -> int | None:
    for pattern in patterns:
        found = pattern.search(message)
        if found is not None:
            return int(found[1])
    return None


def overflow(
    exc: InvalidRequest,
    counted: int | None,
    calibration: Calibration,
    model_id: str,
    known: int | None,
) -> ContextOverflow | None:
    """`exc` as a `ContextOverflow` when it is a refusal for exceeding the window that says
    the window, after `calibration` kept what it taught: the window, when lower than the
    one the model assumed (`known`), and the server's count of the refused prompt against
    the renderer's (`counted`). None: another invalid request."""
    said = window_refusal(str(exc))
    if said is None:
        return None
    window, prompt = said
    learned = False
    if window < (known or window + 1):
        log.warning(
            "%s: the server says its context window is %d tokens, not %s: planning in %d",
            model_id,
            window,
            known or "unknown",
            window,
        )
        learned = calibration.refused(window)
    if prompt is not None:
        learned = calibration.observe(counted, prompt) or learned
    return ContextOverflow(
        str(exc), window=window, prompt_tokens=prompt, learned=learned, status=exc.status
    )
