"""The ``account_data`` extension of simplified sliding sync (MSC3959, as Synapse 1.163's
``get_account_data_extension_response``).

``global``: the user's global account data, all of it (with the current ``m.push_rules``)
on a connection's first response, else what changed since the previous one. ``rooms``:
for the rooms in the extension's scope, all of a room's account data (tags included, they
are its ``m.tag``) when the room is new to the connection, else what changed since the
previous response, and for a room back in view what it missed while out of view
(``sent_rooms``, as Synapse). One read for the global half, at most three for the rooms
(everything of the rooms new to the connection, the changes since the previous response,
those since the earliest missed change).
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet

from peyvand.services.sync.account_data import without_removed_tags
from peyvand.services.sync.sliding.sent_rooms import RoomStatuses, advance, live_out_of_view, split
from peyvand.services.sync.sync import AccountDataSource
from peyvand.types import JsonDict, RoomID, UserID


async def account_data_extension(
    source: AccountDataSource,
    user_id: UserID,
    rooms: AbstractSet[RoomID],
    initial_rooms: AbstractSet[RoomID],
    statuses: RoomStatuses,
    since: int | None,
    upto: int,
) -> tuple[JsonDict, dict[RoomID, int | None]]:
    """``{"global": [...], "rooms": {room_id: [...]}}`` between the account data positions
    ``since`` (None: a first response) and ``upto``, and the rooms' statuses after it
    (``sent_rooms``): a room of ``rooms`` in ``initial_rooms`` or never sent gets
    everything; one sent last time, what changed since ``since``; one that changed while
    out of view, what changed since then (read from the earliest such position: data
    set again is its current value, harmless to repeat)."""
    parts = split(rooms, statuses, initial_rooms, first=since is None)
    by_room = await _everything(source, user_id, parts.initial, statuses.keys(), upto)
    if since is None:
        global_events = await source.global_account_data_since(user_id, None, upto)
        return {"global": global_events, "rooms": by_room}, advance({}, rooms, (), None)
    global_events = []
    changed: dict[RoomID, list[JsonDict]] = {}
    watched = live_out_of_view(statuses, rooms)
    if upto > since:
        global_events = await source.global_account_data_since(user_id, since, upto)
        if parts.live or watched:
            changed = await source.room_account_data_since(user_id, since, upto)
            by_room.update((r, changed[r]) for r in parts.live & changed.keys())
    oldest = parts.oldest
    if oldest is not None and oldest < upto:
        missed = await source.room_account_data_since(user_id, oldest, upto)
        by_room.update((r, missed[r]) for r in parts.previously.keys() & missed.keys())
    after = advance(statuses, rooms, changed.keys() & set(watched), since)
    return {"global": global_events, "rooms": by_room}, after


async def _everything(
    source: AccountDataSource,
    user_id: UserID,
    rooms: AbstractSet[RoomID],
    sent: AbstractSet[RoomID],
    upto: int,
) -> dict[RoomID, list[JsonDict]]:
    """All account data of ``rooms`` (no read for none); of a room the extension never
    ``sent``, without tags all removed (``without_removed_tags``)."""
    if not rooms:
        return {}
    everything = await source.room_account_data_since(user_id, 0, upto)
    found = {
        r: everything[r] if r in sent else without_removed_tags(everything[r])
        for r in rooms & everything.keys()
    }
    return {r: events for r, events in found.items() if events}
