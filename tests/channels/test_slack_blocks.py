"""channels/slack_blocks.py: Slack messages and modals as plain data: buttons carry only
ids, hostile text cannot inject mrkdwn, and nothing exceeds Slack's size limits."""

from __future__ import annotations

import json
from typing import Any

from threadline.channels.base import Notice
from threadline.channels.slack_blocks import (
    APPROVAL_ACTIONS,
    EDIT_VIEW,
    REJECT_VIEW,
    decided,
    edit_view,
    escape,
    message,
    reject_view,
)


def _notice(kind: str, **fields: Any) -> Notice:
    base = {"id": f"th_1:4:{kind}", "thread_id": "th_1", "agent": "deploybot", "seq": 4}
    return Notice(kind=kind, topic=f"{kind}:c1", **{**base, **fields})


def _texts(blocks: list[dict[str, Any]]) -> list[str]:
    out = []
    for block in blocks:
        if "text" in block:
            out.append(block["text"]["text"])
        out += [e["text"] for e in block.get("elements", []) if e.get("type") == "mrkdwn"]
    return out


def test_an_approval_has_three_buttons_carrying_only_ids() -> None:
    notice = _notice(
        "approval", call_id="c1", tool="deploy", arguments={"env": "prod"}, text="ship it"
    )
    text, blocks = message(notice)
    assert text == "Approval needed: deploy" and blocks is not None
    actions = blocks[-1]
    assert [b["action_id"] for b in actions["elements"]] == list(APPROVAL_ACTIONS)
    assert {b["value"] for b in actions["elements"]} == {
        json.dumps({"thread": "th_1", "call": "c1"})
    }
    assert '"env": "prod"' in "".join(_texts(blocks))


def test_hostile_text_is_escaped_and_long_text_is_clipped() -> None:
    assert escape("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;"
    notice = _notice("question", request_id="r1", text="<!here> pick one " + "x" * 5000)
    text, blocks = message(notice)
    assert blocks is not None
    (shown,) = _texts(blocks)
    assert "<!here>" not in shown and "&lt;!here&gt;" in shown
    assert len(shown) <= 2900 and shown.endswith("…")
    answer, none = message(_notice("answer", text="y" * 4000))
    assert none is None and len(answer) == 3000


def test_decided_messages_lose_their_buttons_and_say_the_outcome() -> None:
    call = _notice(
        "decided",
        call_id="c1",
        tool="deploy",
        text="rejected by ana",
        approved=False,
        comment="not <today>",
    )
    text, blocks = decided(call)
    assert text == "rejected by ana"
    assert all(b["type"] != "actions" for b in blocks)
    assert _texts(blocks)[-1] == ":x: rejected by ana: not &lt;today&gt;"
    question = _notice("decided", request_id="r1", question="which?", text="answered by bo")
    _, blocks = decided(question)
    assert _texts(blocks) == ["*Question:* which?", ":white_check_mark: answered by bo"]


def test_the_modals_carry_their_metadata_and_the_arguments_to_edit() -> None:
    reject = reject_view('{"thread":"th_1","call":"c1"}')
    assert reject["callback_id"] == REJECT_VIEW
    assert reject["private_metadata"] == '{"thread":"th_1","call":"c1"}'
    edit = edit_view("meta", "deploy", {"env": "prod", "note": "ü"})
    assert edit["callback_id"] == EDIT_VIEW
    element = edit["blocks"][0]["element"]
    assert json.loads(element["initial_value"]) == {"env": "prod", "note": "ü"}
    assert element["multiline"] is True
