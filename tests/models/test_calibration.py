"""`models.calibration`: the count correction learned from a provider's usage, the window
learned from its refusal, and how the renderer plans under them.

Pure arithmetic and text; the real server's side (llama-cpp-python refusing a request, its
`usage.prompt_tokens` in `tools` mode) is in test_openai_server.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from threadline.context.renderer import Renderer
from threadline.context.settings import ContextSettings
from threadline.errors import TokenBudgetError
from threadline.events import Thread, UserMessage
from threadline.models.base import ModelProfile
from threadline.models.calibration import MAX_FACTOR, STEP, Calibration, window_refusal
from threadline.testing import ScriptedModel

AT = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_first_answer_sets_the_correction_and_later_ones_move_it_by_a_bounded_step() -> None:
    c = Calibration()
    assert c.observe(1000, 1100) and c.factor == pytest.approx(1.1)
    for _ in range(3):
        c.observe(1000, 1100)
    assert c.factor == pytest.approx(1.1) and c.answers == 4
    before = c.factor
    c.observe(1000, 100_000)  # one odd answer: clamped, then weighted
    assert c.factor <= before + 0.25 * (MAX_FACTOR - before) + 1e-9
    assert c.factor < 1.25


def test_it_only_ever_makes_the_budget_more_conservative() -> None:
    c = Calibration()
    assert not c.observe(1000, 900)  # the provider counts fewer: nothing to correct
    assert c.factor == 1.0 and c.scale == 1.0 and c.fit(2048, 512) == 2048
    c.observe(1000, 1100)
    assert c.fit(2048, 512) == 512 + int(1536 / c.scale)
    assert c.fit(2048, 512) < 2048


def test_answers_without_counts_teach_nothing() -> None:
    c = Calibration()
    assert not c.observe(None, 1200)  # a custom rendering has no count
    assert not c.observe(1000, 0)  # a provider that reports no usage
    assert c.answers == 0 and c.version == 0


def test_the_version_moves_only_when_what_the_renderer_reads_moves() -> None:
    c = Calibration()
    c.observe(1000, 1100)
    version = c.version
    c.observe(1000, 1100 + 1)  # well under 1/STEP: the same scale
    assert c.version == version
    assert c.scale * STEP == int(c.scale * STEP)
    assert c.refused(512) and c.version == version + 1
    assert not c.refused(1024)  # a larger window than known is not learned
    assert c.window == 512 and c.fit(2048, 128) <= 512


@pytest.mark.parametrize(
    ("message", "said"),
    [
        (
            # llama-cpp-python's server and vLLM (OpenAI's wording)
            "openai:smollm2: HTTP 400: This model's maximum context length is 512 tokens. "
            "However, you requested 1047 tokens (1007 in the messages, 40 in the "
            "completion). Please reduce the length of the messages or completion.",
            (512, 1007),
        ),
        ("Requested tokens (700) exceed context window of 512", (512, 700)),
        (
            'HTTP 400: {"code": 400, "message": "the request exceeds the available context '
            'size", "type": "exceed_context_size_error", "n_prompt_tokens": 4100, '
            '"n_ctx": 4096}',
            (4096, 4100),
        ),
        ("This model's maximum context length is 8192 tokens.", (8192, None)),
        (
            # Anthropic's Messages API (invalid_request_error)
            "anthropic:claude-sonnet-4-6: HTTP 400: prompt is too long: 215000 tokens > "
            "200000 maximum",
            (200000, 215000),
        ),
        ("HTTP 400: response_format must be text or json_object", None),
        ("HTTP 400: context too long", None),  # says no window: not learned
    ],
)
def test_a_refusal_says_the_window_or_is_not_one(
    message: str, said: tuple[int, int | None] | None
) -> None:
    assert window_refusal(message) == said


def test_the_renderer_plans_in_the_calibrated_window_and_follows_its_moves() -> None:
    calibration = Calibration()
    model = ScriptedModel(
        [], profile=ModelProfile(context_window=4096, tokenizer="approx", calibration=calibration)
    )
    renderer = Renderer(name="a", instructions="Answer.", settings=ContextSettings())
    thread = Thread("t", "a", [UserMessage(seq=0, at=AT, text="word " * 1500)])
    renderer.bind(model)
    assert renderer.budget.window == 4096 and renderer.budget.max_output_tokens == 1024
    counted = renderer.render(thread).context.input_tokens
    assert counted is not None and counted > 2000
    # The provider counts 20% more: the same model, bound again, plans in less.
    calibration.observe(counted, int(counted * 1.2))
    renderer.bind(model)
    assert renderer.budget.window == 1024 + int(3072 / calibration.scale)
    assert renderer.budget.window < 4096
    # The server said 2,048: the budget is sized for that window (a quarter for the
    # output), then corrected.
    calibration.refused(2048)
    renderer.bind(model)
    assert renderer.budget.max_output_tokens == 512
    assert renderer.budget.window == 512 + int(1536 / calibration.scale)
    with pytest.raises(TokenBudgetError):  # the user's message alone no longer fits
        renderer.render(thread)


def test_a_learned_window_narrows_an_explicit_budget_too() -> None:
    from threadline.context.budget import ContextBudget

    settings = ContextSettings(budget=ContextBudget(window=8000, max_output_tokens=1024))
    assert settings.budget_for(None, window=512) == ContextBudget(window=512, max_output_tokens=128)
    assert settings.budget_for(None, window=9000).window == 8000  # never widened
    assert ContextSettings(context_window=4096).budget_for(None, window=1024).window == 1024
    assert ContextSettings(context_window=1024).budget_for(None, window=4096).window == 1024
