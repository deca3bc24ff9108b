"""routers/events.py (named apart from tests/test_events.py: test basenames must be unique): every
event kind with the label its class declares."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import get_args

import threadline.server
from server_support import LiveServer, assert_problem
from threadline.events import EVENT_CLASSES, event_from_json, summarize
from threadline.events.kinds import Origin, Role


def test_every_event_kind_is_served_with_its_declared_traits(live: LiveServer) -> None:
    with live.client("reader") as c:
        r = c.get("/v1/event-kinds")
    assert r.status_code == 200, r.text
    served = r.json()["items"]
    assert [k["kind"] for k in served] == [c.model_fields["kind"].default for c in EVENT_CLASSES]
    for kind, cls in zip(served, EVENT_CLASSES, strict=True):
        assert kind == {
            "kind": cls.model_fields["kind"].default,
            "label": cls.traits.label,
            "origin": cls.traits.origin,
            "error": cls.traits.error,
            "role": cls.traits.role,
        }
    assert len({k["label"] for k in served}) == len(served)  # a label names one kind
    with live.client(None) as c:
        assert_problem(c.get("/v1/event-kinds"), 401)


def test_the_page_styles_events_by_declared_traits_never_by_kind() -> None:
    """style.css names origins and roles (which /v1/event-kinds serves), never a kind."""
    css = (Path(threadline.server.__file__).parent / "ui" / "style.css").read_text()
    classes = set(re.findall(r"\.([a-z][\w-]*)", css))
    assert not {c for c in classes if c.startswith("k-")}
    styled = {c for c in classes if c[:2] in ("o-", "r-")}
    assert styled == {"o-outside", "o-model", "r-asks", "r-success", "r-failure"}
    assert {c[2:] for c in styled if c.startswith("o-")} <= set(get_args(Origin))
    assert {c[2:] for c in styled if c.startswith("r-")} <= set(get_args(Role))
    roles = {cls.model_fields["kind"].default: cls.traits.role for cls in EVENT_CLASSES}
    assert roles["approval_requested"] == roles["human_request"] == "asks"
    assert roles["tool_result"] == roles["done"] == "success"
    assert roles["escalated"] == roles["failed"] == "failure"


def test_every_served_event_carries_its_summary_in_pages_and_streams(live: LiveServer) -> None:
    thread = live.launch()
    stored = [event_from_json(body) for _, body in live.stored_events(thread["id"])]
    with live.client("reader") as c:
        page = c.get(f"/v1/threads/{thread['id']}/events").json()["events"]
        sent: list[dict[str, object]] = []
        with c.stream("GET", f"/v1/threads/{thread['id']}/events/stream") as resp:
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    sent.append(json.loads(line[6:]))
                if len(sent) == len(stored):
                    break
    expected = [summarize(e).model_dump() for e in stored]
    assert [e["summary"] for e in page] == expected
    assert [e["summary"] for e in sent] == expected
    assert any(s["detail"] for s in expected) and all(s["text"] is not None for s in expected)
