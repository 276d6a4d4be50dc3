"""A space's children: its ``m.space.child`` state events whose state key is a room ID and
whose ``via`` is not empty, in the order the Client-Server API's "Spaces" module gives
("Ordering of children within a space"), stripped as the hierarchy endpoints carry them
(``children_state``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from peyvand.events.pdu import Pdu, StateKey
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.types import JsonDict

SPACE_CHILD: Final = "m.space.child"
# The children one room's entry names at most: a space bigger than this is cut, in order.
MAX_CHILDREN_STATE: Final = 1000
_MAX_ORDER_LENGTH: Final = 50


def is_room_id(value: Any) -> bool:
    """Whether ``value`` is a room ID (Appendices, "Room IDs": the sigil ``!``), as the
    state key of an ``m.space.child`` event must be to name a child (Client-Server API,
    "Spaces"): any other key names nothing to walk or to ask other servers about."""
    return isinstance(value, str) and value.startswith("!")


def valid_via(via: Any) -> bool:
    """A child counts only with a non-empty ``via`` list of server names."""
    return isinstance(via, list) and bool(via) and all(isinstance(v, str) for v in via)


def child_order(
    content: Mapping[str, Any], origin_server_ts: int, room_id: str
) -> tuple[bool, str, int, str]:
    """The sort key of a child: a valid ``order`` (at most 50 characters from U+0020 to
    U+007E) first, by code point, then ``origin_server_ts``, then the room ID."""
    order = content.get("order")
    valid = (
        isinstance(order, str)
        and len(order) <= _MAX_ORDER_LENGTH
        and all(" " <= c <= "~" for c in order)
    )
    return (not valid, order if valid and isinstance(order, str) else "", origin_server_ts, room_id)


async def local_children_state(
    state: StateService, snapshot: RoomSnapshot, *, suggested_only: bool
) -> tuple[JsonDict, ...]:
    """The room's current children (only those marked ``suggested`` with
    ``suggested_only``), stripped, ordered, at most ``MAX_CHILDREN_STATE``."""
    keys: list[StateKey] = [k for k in snapshot.state if k[0] == SPACE_CHILD and is_room_id(k[1])]
    events = await state.get_state_events(snapshot.state, keys)
    children = [
        e
        for e in events.values()
        if valid_via(e.content.get("via"))
        and (not suggested_only or e.content.get("suggested") is True)
    ]
    children.sort(key=_pdu_order)
    return tuple(_stripped(e) for e in children[:MAX_CHILDREN_STATE])


def _pdu_order(event: Pdu) -> tuple[bool, str, int, str]:
    return child_order(event.content, event.origin_server_ts, event.state_key or "")


def _stripped(event: Pdu) -> JsonDict:
    return {
        "type": event.type,
        "state_key": event.state_key,
        "content": event.content,
        "sender": event.sender,
        "origin_server_ts": event.origin_server_ts,
    }
