"""The persistent data unit (Server-Server API, "PDUs"; the event format of rooms v1-v12).

A ``Pdu`` is an immutable view over the event's federation JSON, the ``event_id`` that
was computed from it (reference hash, see ``hashes.compute_event_id``) and its room
version. The JSON is never mutated; ``unsigned`` data the server adds for clients lives
outside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peyvand.events.room_versions import RoomVersion
from peyvand.types import EventID, JsonDict, RoomID, UserID

StateKey = tuple[str, str]


class Pdu:
    __slots__ = ("_data", "event_id", "rejected_reason", "room_version")

    def __init__(
        self,
        data: JsonDict,
        event_id: EventID,
        room_version: RoomVersion,
        rejected_reason: str | None = None,
    ) -> None:
        self._data = data
        self.event_id = event_id
        self.room_version = room_version
        self.rejected_reason = rejected_reason

    def __repr__(self) -> str:
        return f"<Pdu {self.event_id} {self.type} {self.state_key!r} by {self.sender}>"

    @property
    def data(self) -> Mapping[str, Any]:
        """The PDU as sent over federation (read-only; copy before changing)."""
        return self._data

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    @property
    def room_id(self) -> RoomID:
        """The room ID; for a v12 m.room.create it is derived from the event ID."""
        room_id = self._data.get("room_id")
        if room_id is None and self.type == "m.room.create":
            return RoomID("!" + self.event_id[1:])
        return RoomID(str(room_id))

    @property
    def type(self) -> str:
        return str(self._data["type"])

    @property
    def state_key(self) -> str | None:
        return self._data.get("state_key")

    def is_state(self) -> bool:
        return "state_key" in self._data

    @property
    def sender(self) -> UserID:
        return UserID(self._data["sender"])

    @property
    def content(self) -> Mapping[str, Any]:
        content: Mapping[str, Any] = self._data.get("content", {})
        return content

    @property
    def prev_event_ids(self) -> list[EventID]:
        return _event_ids(self._data.get("prev_events", []))

    @property
    def auth_event_ids(self) -> list[EventID]:
        return _event_ids(self._data.get("auth_events", []))

    @property
    def depth(self) -> int:
        return int(self._data.get("depth", 0))

    @property
    def origin_server_ts(self) -> int:
        return int(self._data.get("origin_server_ts", 0))

    @property
    def redacts(self) -> EventID | None:
        """The redacted event: in ``content`` from v11, top-level before (either is read)."""
        if self.room_version.redacts_in_content:
            value = self.content.get("redacts", self._data.get("redacts"))
        else:
            value = self._data.get("redacts", self.content.get("redacts"))
        return EventID(value) if isinstance(value, str) else None

    @property
    def membership(self) -> str | None:
        value = self.content.get("membership")
        return value if isinstance(value, str) else None

    @property
    def state_tuple(self) -> StateKey:
        """``(type, state_key)``; only meaningful for state events."""
        return (self.type, self._data.get("state_key", ""))


def _event_ids(references: list[Any]) -> list[EventID]:
    """Event IDs from ``prev_events``/``auth_events``: plain IDs (v3+) or, in v1/v2,
    ``[event_id, {"sha256": ...}]`` pairs (``pdu_v1.yaml``)."""
    return [EventID(ref[0]) if isinstance(ref, list) else EventID(ref) for ref in references]
