"""An event kind is declared once, and every consumer matches kinds exhaustively: a kind
nobody handles is named by mypy, and fails loudly (never as "") at run time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Literal, get_args

import pytest

from threadline.cli.display import format_event
from threadline.context.compact import compact_block
from threadline.context.compaction import digest
from threadline.context.messages import MESSAGES
from threadline.context.tokens import ApproxCounter
from threadline.events import (
    EVENT_CLASSES,
    Event,
    EventTraits,
    Thread,
    ThreadState,
    _EventBase,
    summarize,
)
from threadline.observability import event_log_record

ROOT = Path(__file__).resolve().parent.parent
AT = datetime(2024, 1, 1, tzinfo=UTC)


class Poked(_EventBase):
    """A kind the library has never heard of."""

    kind: Literal["poked"] = "poked"
    traits: ClassVar[EventTraits] = EventTraits("poked", "outside", "input", ("text",))
    text: str = "hello"


def test_every_kind_declares_its_own_traits() -> None:
    union = get_args(get_args(Event)[0])
    assert set(union) == set(EVENT_CLASSES)
    labels = set()
    for cls in EVENT_CLASSES:
        assert "traits" in cls.__dict__, f"{cls.__name__} inherits its traits"
        traits = cls.traits
        assert traits.label and traits.label not in labels
        labels.add(traits.label)
        for name in traits.untrusted:
            assert name in cls.model_fields, f"{cls.__name__}.{name}"
    outside = {
        c.model_fields["kind"].default for c in EVENT_CLASSES if c.traits.origin == "outside"
    }
    assert outside == {
        "user_message",
        "approval",
        "responded_instead",
        "human_response",
        "paused",
        "resumed",
        "external_event",
        "budget_raised",
    }


CONSUMERS = {
    "compact format": lambda e: compact_block([e], 0),
    "messages format": lambda e: MESSAGES.block([e], 0, False, 100, ApproxCounter()),
    "digest": lambda e: digest([e]),
    "event log": lambda e: event_log_record(Thread("t", "a"), e),
    "CLI display": format_event,
    "derived state": lambda e: ThreadState().apply(e),
    "web summary": summarize,
}


@pytest.mark.parametrize("consumer", sorted(CONSUMERS))
def test_an_unknown_kind_fails_loudly_in_every_consumer(consumer: str) -> None:
    with pytest.raises(AssertionError):
        CONSUMERS[consumer](Poked(seq=0, at=AT))


_NEW_KIND = """

class Poked(_EventBase):
    kind: Literal["poked"] = "poked"
    traits: ClassVar[EventTraits] = EventTraits("poked", "outside", "input")
"""


@pytest.mark.slow
def test_mypy_names_every_consumer_of_a_new_kind(tmp_path: Path) -> None:
    """Add a kind to a copy of the source: mypy lists each place that must handle it."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "threadline", src / "threadline")
    events = src / "threadline" / "events" / "kinds.py"
    text = events.read_text()
    marker = "\n\nEvent = Annotated["
    assert marker in text and "    | WaitTimedOut,\n" in text
    text = text.replace(marker, _NEW_KIND + marker, 1)
    text = text.replace("    | WaitTimedOut,\n", "    | WaitTimedOut\n    | Poked,\n", 1)
    events.write_text(text)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(src), "MYPYPATH": str(src)}
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / ".mypy_cache")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = out.stdout + out.stderr
    assert out.returncode == 1, report
    flagged = {
        line.split(":", 1)[0].replace(os.sep, "/")
        for line in report.splitlines()
        if "assert_never" in line and "Poked" in line
    }
    assert flagged == {
        "src/threadline/events/state.py",
        "src/threadline/events/summary.py",
        "src/threadline/observability/log.py",
        "src/threadline/cli/display.py",
        "src/threadline/context/compact.py",
        "src/threadline/context/compaction.py",
        "src/threadline/context/messages.py",
    }, report
