"""routers/events.py (named apart from tests/test_events.py: test basenames must be unique): every
event kind with the label its class declares."""

from __future__ import annotations

from server_support import LiveServer, assert_problem
from threadline.events import EVENT_CLASSES


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
        }
    assert len({k["label"] for k in served}) == len(served)  # a label names one kind
    with live.client(None) as c:
        assert_problem(c.get("/v1/event-kinds"), 401)
