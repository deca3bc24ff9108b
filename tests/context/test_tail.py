"""A thread's last rendering as the incremental renderer keeps it (`context/tail.py`):
its body, joined onto the part of the last one no pop cut off, is always its blocks
joined. tests/context/test_incremental.py checks whole renderings against the full path."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from threadline.context.tail import Tail
from threadline.events import UserMessage

AT = datetime(2024, 1, 1, tzinfo=UTC)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=6), st.none(), st.just("pop"), st.just("body"))))
def test_a_tails_body_is_its_texts_joined_whatever_was_pushed_and_popped(
    steps: list[str | None],
) -> None:
    # The body is joined from the last one's kept part and the blocks added since
    # (`Tail.body`): after any pushes, pops and bodies, it is the texts joined.
    event = UserMessage(seq=0, at=AT, text="x")
    tail = Tail(key="k", n=0, first=event, last=event)
    for step in steps:
        if step == "pop":
            if tail.units:
                tail.pop("history")
        elif step == "body":
            assert tail.body() == "\n".join(tail.texts)
        else:
            tail.push(("e", 0, False), 1, step, "history")
    assert tail.body() == "\n".join(tail.texts)
