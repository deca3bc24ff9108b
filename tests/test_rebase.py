"""rebase.py: what a step in flight may be re-based over (pure; the races themselves, on
SQLite and PostgreSQL, are in tests/test_runtime_actions.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from threadline.events import Approval, Event, Failed, ModelCall, Resumed, Thread, UserMessage
from threadline.rebase import advanced_meanwhile, ended_meanwhile, still_decided

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _message() -> UserMessage:
    return UserMessage(seq=0, at=T0, text="hi")


def _model_call() -> ModelCall:
    return ModelCall(seq=0, at=T0, model="m")


def _cancel() -> Failed:
    return Failed(seq=0, at=T0, reason="cancelled by ops")


def _resume() -> Resumed:
    return Resumed(seq=0, at=T0, by="ops")


def test_another_advancers_step_counts_only_before_the_thread_was_ended() -> None:
    assert not advanced_meanwhile([_message(), Approval(seq=0, at=T0, call_id="c1", approved=True)])
    assert advanced_meanwhile([_message(), _model_call()])
    assert advanced_meanwhile([_model_call(), _cancel()])
    assert not advanced_meanwhile([_cancel()])
    # After the end: a resume and the resumed thread's new run, not a race with this step.
    assert not advanced_meanwhile([_cancel(), _resume(), _model_call()])


def test_an_end_meanwhile_is_seen_whether_or_not_it_was_resumed() -> None:
    assert not ended_meanwhile([_message(), _model_call(), _resume()])
    assert ended_meanwhile([_cancel()])
    assert ended_meanwhile([_cancel(), _resume(), _model_call()])


def _thread(*events: Event) -> Thread:
    thread = Thread("th_rb", "agent")
    for event in events:
        thread.append(event.model_copy(update={"seq": thread.next_seq}))
    return thread


def test_an_answer_stands_unless_the_thread_ended_after_it_was_asked_for() -> None:
    asked = still_decided(1)  # the model was asked after the first message
    assert asked(_thread(_message()))
    assert asked(_thread(_message(), _message()))  # a person's message: re-based over
    assert not asked(_thread(_message(), _cancel()))
    assert not asked(_thread(_message(), _cancel(), _resume()))  # resumed: decide again
    assert asked(_thread(_cancel(), _resume(), _message()))  # ended before it was asked
