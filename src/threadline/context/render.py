"""Renderers: the thread -> the exact context a model call receives.

The default is the compact form: the system prompt (instructions plus the intent format),
and the whole thread as one user message in which each event is a tagged block.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..events import Event, Thread
from ..models.base import Context, Message, ToolSpec

if TYPE_CHECKING:
    from ..agent import Agent

__all__ = ["render_context", "render_event"]


def render_event(event: Event) -> str:
    """One event as a tagged block."""
    match event.kind:
        case "user_message":
            return f"<user_message>\n{event.text}\n</user_message>"
        case "tool_call":
            args = json.dumps(event.arguments, ensure_ascii=False)
            return f'<{event.tool} call_id="{event.call_id}">{args}</{event.tool}>'
        case "tool_result":
            return f'<{event.tool}_result call_id="{event.call_id}">\n' \
                   f"{json.dumps(event.result, ensure_ascii=False)}\n</{event.tool}_result>"
        case "tool_error":
            return f'<error tool="{event.tool}">{event.error_type}: {event.message}</error>'
        case "invalid_output":
            return f"<error>your last output was invalid: {event.reason}</error>"
        case "model_error":
            return ""
        case "approval":
            if event.approved:
                return f'<approved call_id="{event.call_id}"/>'
            return f'<rejected call_id="{event.call_id}">{event.comment or ""}</rejected>'
        case "human_response":
            return f"<human_response>\n{event.text}\n</human_response>"
        case "done":
            return f"<done>{event.message}</done>"
        case "compacted":
            return f"<summary of events {event.from_seq}-{event.to_seq}>\n{event.summary}\n" \
                   "</summary>"
        case "external_event":
            return f"<{event.name}>{json.dumps(event.payload, ensure_ascii=False)}</{event.name}>"
    return ""


def render_context(agent: Agent, thread: Thread) -> Context:
    """The compact form of `thread` for `agent`."""
    tools = agent.visible_tools()
    names = ", ".join(t.name for t in tools)
    system = (
        f"{agent.instructions.strip()}\n\n"
        f"Answer with one JSON object naming the next step: "
        f'{{"intent": <one of {names}>, "arguments": {{...}}}}.'
    ).strip()
    blocks = [b for b in (render_event(e) for e in thread.events) if b]
    return Context(
        system=system,
        messages=(Message("user", "\n\n".join(blocks)),),
        tools=tuple(ToolSpec(t.name, t.description, t.schema()) for t in tools),
        output_schema=agent.output_schema(),
    )
