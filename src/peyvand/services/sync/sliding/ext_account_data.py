"""The ``account_data`` extension of simplified sliding sync (MSC3959, as Synapse 1.163's
``get_account_data_extension_response``).

``global``: the user's global account data, all of it (with the current ``m.push_rules``)
on a connection's first response, else what changed since the previous one. ``rooms``:
for the rooms in the extension's scope, all of a room's account data (tags included, they
are its ``m.tag``) when the room is new to the connection, else what changed since the
previous response. At most one read for each half.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet

from peyvand.services.sync.sync import AccountDataSource
from peyvand.types import JsonDict, RoomID, UserID


async def account_data_extension(
    source: AccountDataSource,
    user_id: UserID,
    rooms: AbstractSet[RoomID],
    initial_rooms: AbstractSet[RoomID],
    since: int | None,
    upto: int,
) -> JsonDict:
    """``{"global": [...], "rooms": {room_id: [...]}}`` between the account data positions
    ``since`` (None: a first response) and ``upto``; those of ``rooms`` in
    ``initial_rooms`` get everything."""
    if since is None:
        return {
            "global": await source.global_account_data_since(user_id, 0, upto),
            "rooms": await _everything(source, user_id, rooms, upto),
        }
    by_room = await _everything(source, user_id, rooms & initial_rooms, upto)
    if upto <= since:
        return {"global": [], "rooms": by_room}
    global_events = await source.global_account_data_since(user_id, since, upto)
    live = rooms - initial_rooms
    if live:
        changed = await source.room_account_data_since(user_id, since, upto)
        by_room.update((r, changed[r]) for r in live & changed.keys())
    return {"global": global_events, "rooms": by_room}


async def _everything(
    source: AccountDataSource, user_id: UserID, rooms: AbstractSet[RoomID], upto: int
) -> dict[RoomID, list[JsonDict]]:
    """All account data of ``rooms`` (no read for none)."""
    if not rooms:
        return {}
    everything = await source.room_account_data_since(user_id, 0, upto)
    return {r: everything[r] for r in rooms & everything.keys()}
