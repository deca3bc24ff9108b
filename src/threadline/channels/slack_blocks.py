"""What Threadline's Slack messages and modals look like (Block Kit), as plain data.

No I/O here: `message(notice)` gives the `text` and `blocks` of a notice, `decided(notice)`
the blocks an approval or question message is updated to, and the three modals collect a
rejection's comment, an approval's edited arguments and a message sent instead of a
verdict ("respond instead"). Button values and modal metadata
carry only ids (thread and call); every click is verified and checked against the thread
when it arrives.
"""

from __future__ import annotations

import json
from typing import Any

from .base import Notice

__all__ = [
    "APPROVAL_ACTIONS",
    "EDIT_VIEW",
    "INSTEAD_VIEW",
    "REJECT_VIEW",
    "decided",
    "edit_view",
    "escape",
    "instead_view",
    "message",
    "reject_view",
]

APPROVAL_ACTIONS = (
    "threadline_approve",
    "threadline_reject",
    "threadline_edit",
    "threadline_instead",
)
REJECT_VIEW = "threadline_reject"
EDIT_VIEW = "threadline_edit"
INSTEAD_VIEW = "threadline_instead"
_SECTION_LIMIT = 2900  # Slack refuses section text over 3000 characters


def escape(text: str) -> str:
    """Text shown as-is in mrkdwn (Slack's three control characters escaped)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int = _SECTION_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text)}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(text, 2000)}]}


def _call_blocks(notice: Notice) -> list[dict[str, Any]]:
    args = json.dumps(notice.arguments, indent=2, ensure_ascii=False)
    blocks = [_section(f"*{escape(notice.agent)}* asks to run `{escape(notice.tool or '?')}`")]
    if notice.kind == "approval" and notice.text:
        blocks.append(_context(f"Request: {escape(notice.text)}"))
    blocks.append(_section(f"```{escape(_clip(args, 2800))}```"))
    return blocks


def _button(action: str, label: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action,
        "text": {"type": "plain_text", "text": label},
        "value": value,
    }
    if style:
        button["style"] = style
    return button


def message(notice: Notice) -> tuple[str, list[dict[str, Any]] | None]:
    """The fallback text and the blocks (None: text only) of a notice."""
    match notice.kind:
        case "approval":
            value = json.dumps({"thread": notice.thread_id, "call": notice.call_id})
            approve, reject, edit, instead = APPROVAL_ACTIONS
            actions = {
                "type": "actions",
                "block_id": "threadline_approval",
                "elements": [
                    _button(approve, "Approve", value, "primary"),
                    _button(reject, "Reject…", value, "danger"),
                    _button(edit, "Edit…", value),
                    _button(instead, "Respond instead…", value),
                ],
            }
            return f"Approval needed: {notice.tool}", [*_call_blocks(notice), actions]
        case "question":
            text = f"*Question:* {escape(notice.text)}\n_Reply in this thread to answer._"
            return f"Question: {notice.text}", [_section(text)]
        case "answer":
            return _clip(notice.text or "Done.", 3000), None
        case "escalation":
            return f":warning: Escalated to a human: {_clip(notice.text, 2900)}", None
        case "reminder":
            return f":bell: Reminder: `{notice.tool}` is still waiting for an approval.", None
        case "decided":
            return _outcome(notice), None


def _outcome(notice: Notice) -> str:
    if notice.call_id is not None and notice.approved is None:  # a message, no verdict
        line = f":speech_balloon: {escape(notice.text)}"
        return line + (f": {escape(_clip(notice.comment, 500))}" if notice.comment else "")
    mark = ":x:" if notice.approved is False else ":white_check_mark:"
    line = f"{mark} {escape(notice.text)}"
    if notice.approved is False and notice.comment:
        line += f": {escape(_clip(notice.comment, 500))}"
    return line


def decided(notice: Notice) -> tuple[str, list[dict[str, Any]]]:
    """What an approval or question message becomes once decided (buttons removed)."""
    if notice.call_id is not None:
        return notice.text, [*_call_blocks(notice), _context(_outcome(notice))]
    question = _section(f"*Question:* {escape(notice.question)}")
    return notice.text, [question, _context(_outcome(notice))]


def _modal(
    callback: str, metadata: str, title: str, submit: str, field: str, label: str, **element: Any
) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": callback,
        "private_metadata": metadata,
        "title": {"type": "plain_text", "text": title},
        "submit": {"type": "plain_text", "text": submit},
        "blocks": [
            {
                "type": "input",
                "block_id": field,
                "label": {"type": "plain_text", "text": label},
                "element": {
                    "type": "plain_text_input",
                    "action_id": field,
                    "multiline": True,
                    **element,
                },
            }
        ],
    }


def reject_view(metadata: str) -> dict[str, Any]:
    """The modal asking why a call is rejected (the model reads the comment)."""
    return _modal(
        REJECT_VIEW, metadata, "Reject", "Reject", "comment", "Why? The agent reads this."
    )


def instead_view(metadata: str) -> dict[str, Any]:
    """The modal for a message instead of a verdict: the call is not run, and the agent
    reads the message and decides again."""
    return _modal(
        INSTEAD_VIEW,
        metadata,
        "Respond instead",
        "Send",
        "message",
        "Your message to the agent (the call is not run)",
    )


def edit_view(metadata: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The modal to approve a call with edited arguments (JSON, checked on submit)."""
    return _modal(
        EDIT_VIEW,
        metadata,
        "Edit and approve",
        "Approve",
        "arguments",
        f"Arguments of {tool[:100]} (JSON)",
        initial_value=json.dumps(arguments, indent=2, ensure_ascii=False)[:2900],
    )
