"""`Thread`: the append-only event sequence of one agent run and its folded state; parsing
stored events (schema upgrades)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ..errors import CorruptEvent
from .kinds import SCHEMA_VERSION, Event, JsonValue, utcnow
from .state import _EMPTY, Status, ThreadState

__all__ = [
    "Thread",
    "event_from_dict",
    "event_from_json",
]

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
_EVENT_LIST_ADAPTER: TypeAdapter[list[Event]] = TypeAdapter(list[Event])


class Thread:
    """An agent run: its id, agent name, events and derived state.

    A `Thread` is the in-memory form a store loads and the runtime extends. `append`
    checks seq density and folds the event into `state` in O(1).
    """

    __slots__ = ("agent", "created_at", "events", "id", "metadata", "schema_version", "state")

    def __init__(
        self,
        id: str,
        agent: str,
        events: Iterable[Event] = (),
        *,
        metadata: dict[str, JsonValue] | None = None,
        created_at: datetime | None = None,
        schema_version: int = SCHEMA_VERSION,
    ) -> None:
        self.id = id
        self.agent = agent
        self.metadata: dict[str, JsonValue] = metadata if metadata is not None else {}
        self.created_at = created_at or utcnow()
        self.schema_version = schema_version
        self.events: list[Event] = []
        self.state = ThreadState()
        for event in events:
            self.append(event)

    def append(self, event: Event) -> None:
        """Add one event at the end. Raises CorruptEvent if its seq is not the next one."""
        try:
            self.state.apply(event)
        except CorruptEvent:
            raise CorruptEvent(self.id, event.seq, f"expected seq {self.state.next_seq}") from None
        self.events.append(event)

    def extend(self, events: Sequence[Event]) -> None:
        for event in events:
            self.append(event)

    def append_new(self, kind: Callable[..., Event], **fields: Any) -> None:
        """Append a new event of class `kind` at the next seq (a thread built by hand: an
        imported transcript, a prompt's test case). `fields` are the event's but `seq`.

        Raises:
            pydantic.ValidationError: `fields` are not the fields of `kind`.
        """
        self.append(kind(seq=self.next_seq, **fields))

    @property
    def status(self) -> Status:
        return self.state.status

    @property
    def next_seq(self) -> int:
        return self.state.next_seq

    def __len__(self) -> int:
        return len(self.events)

    def __repr__(self) -> str:
        return (
            f"Thread(id={self.id!r}, agent={self.agent!r}, events={len(self.events)}, "
            f"status={self.status.value!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Lossless JSON-ready form: `Thread.from_dict(t.to_dict())` equals `t`."""
        return {
            "id": self.id,
            "agent": self.agent,
            "schema_version": SCHEMA_VERSION,
            "created_at": self.created_at.isoformat(),
            "metadata": self.metadata,
            "events": [e.model_dump(mode="json") for e in self.events],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Thread:
        """Load a thread written by this or any older schema version."""
        version = int(data.get("schema_version", 0))
        thread_id = str(data["id"])
        if version == SCHEMA_VERSION:
            try:
                events = _EVENT_LIST_ADAPTER.validate_python(data.get("events", []))
            except ValidationError as exc:
                raise CorruptEvent(thread_id, -1, _short_validation(exc)) from None
        else:
            events = [
                event_from_dict(e, schema_version=version, thread_id=thread_id)
                for e in data.get("events", [])
            ]
        created = data.get("created_at")
        return cls(
            thread_id,
            str(data["agent"]),
            events,
            metadata=dict(data.get("metadata") or _EMPTY),
            created_at=datetime.fromisoformat(created) if created else None,
        )


def _upgrade_v0(data: dict[str, Any]) -> dict[str, Any]:
    """Version 0 (the 0.0.x previews) named the discriminator `type` and the tool `tool_name`."""
    data = dict(data)
    if "type" in data and "kind" not in data:
        data["kind"] = data.pop("type")
    if "tool_name" in data:
        data["tool"] = data.pop("tool_name")
    if data.get("kind") == "tool_call" and "version" not in data:
        data["version"] = "1"
    return data


_UPGRADES = {0: _upgrade_v0}
"""schema_version -> function that lifts one event dict to schema_version + 1."""


def event_from_dict(
    data: dict[str, Any], *, schema_version: int = SCHEMA_VERSION, thread_id: str = "?"
) -> Event:
    """Parse one stored event, upgrading it from `schema_version` first.

    Raises:
        CorruptEvent: the data is not a valid event of any known kind.
    """
    for version in range(schema_version, SCHEMA_VERSION):
        data = _UPGRADES[version](data)
    try:
        return _EVENT_ADAPTER.validate_python(data)
    except ValidationError as exc:
        seq = data.get("seq", -1) if isinstance(data, dict) else -1
        raise CorruptEvent(
            thread_id, int(seq) if isinstance(seq, int) else -1, _short_validation(exc)
        ) from None


def event_from_json(
    raw: str | bytes, *, schema_version: int = SCHEMA_VERSION, thread_id: str = "?"
) -> Event:
    """Parse one stored event from JSON (see `event_from_dict`)."""
    if schema_version == SCHEMA_VERSION:
        try:
            return _EVENT_ADAPTER.validate_json(raw)
        except ValidationError as exc:
            raise CorruptEvent(thread_id, -1, _short_validation(exc)) from None
    import json

    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CorruptEvent(thread_id, -1, f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CorruptEvent(thread_id, -1, "not a JSON object")
    return event_from_dict(data, schema_version=schema_version, thread_id=thread_id)


def _short_validation(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    return f"{loc}: {first['msg']}" if loc else first["msg"]
