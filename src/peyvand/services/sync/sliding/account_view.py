"""The user's DM rooms (``m.direct``) and room tags (``m.tag``), which list filters and
``is_dm`` read (MSC4186 "Filters"), kept per user until the user's account data moves.

Each is read in one query when first needed, then answered from memory for as long as
the account data stream has not moved (a change wakes the user's syncs anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from peyvand.lru import LRU
from peyvand.services.sync.sync import AccountDataSource
from peyvand.types import JsonDict, RoomID, UserID

_USERS = 10_000


class AccountView:
    """An ``AccountDataReader`` over the account data service."""

    def __init__(self, source: AccountDataSource, position: Callable[[], int]) -> None:
        self._source = source
        self._position = position
        self._direct: LRU[UserID, tuple[int, frozenset[RoomID]]] = LRU(_USERS)
        self._tags: LRU[UserID, tuple[int, Mapping[RoomID, frozenset[str]]]] = LRU(_USERS)

    async def direct_rooms(self, user_id: UserID) -> frozenset[RoomID]:
        """The rooms of the user's ``m.direct`` ("Direct Messaging")."""
        now = self._position()
        held = self._direct.get(user_id)
        if held is not None and held[0] == now:
            return held[1]
        events = await self._source.global_account_data_since(user_id, 0, now)
        rooms = _direct_rooms(next((e["content"] for e in events if e["type"] == "m.direct"), {}))
        self._direct.put(user_id, (now, rooms))
        return rooms

    async def room_tags(self, user_id: UserID) -> Mapping[RoomID, frozenset[str]]:
        """Each room's tag names ("Room Tagging")."""
        now = self._position()
        held = self._tags.get(user_id)
        if held is not None and held[0] == now:
            return held[1]
        by_room = await self._source.room_account_data_since(user_id, 0, now)
        tags: dict[RoomID, frozenset[str]] = {}
        for room_id, events in by_room.items():
            for event in events:
                named = event["content"].get("tags") if event["type"] == "m.tag" else None
                if isinstance(named, dict) and named:
                    tags[room_id] = frozenset(named)
        self._tags.put(user_id, (now, tags))
        return tags


def _direct_rooms(content: JsonDict) -> frozenset[RoomID]:
    """Every room ID listed under any user of an ``m.direct`` content."""
    return frozenset(
        RoomID(room_id)
        for rooms in content.values()
        if isinstance(rooms, list)
        for room_id in rooms
        if isinstance(room_id, str)
    )
