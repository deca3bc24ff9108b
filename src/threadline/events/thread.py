"""`Thread`: the append-only event sequence of one agent run and its folded state."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ..errors import CorruptEvent
from .kinds import (
    _EVENT_LIST_ADAPTER,
    SCHEMA_VERSION,
    Event,
    JsonValue,
    _short_validation,
    event_from_dict,
    utcnow,
)
from .state import _EMPTY, Status, ThreadState

__all__ = [
    "Thread",
]


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
