"""Account data and room tags (Client-Server API, "Client Config" and "Room Tagging").

Account data is one JSON object per (user, room or global, type). Tags are the ``m.tag``
room account data, ``{"tags": {tag: {...}}}``. Every write takes the next position of
the account data stream and wakes only its owner's syncs. Writes are serialised so the
stream's positions commit in order (a sync never skips a position it has not seen).
"""

from __future__ import annotations

import asyncio

from peyvand.errors import Errcode, MatrixError, forbidden, invalid_param, not_found
from peyvand.services.accounts.ignored_users import IgnoredUsers
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.streams import Stream
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.account_data import GLOBAL, AccountDataStore
from peyvand.types import JsonDict, RoomID, UserID

TAG_EVENT_TYPE = "m.tag"
FULLY_READ_EVENT_TYPE = "m.fully_read"
# "Direct Messaging": global account data mapping users to their direct rooms.
DIRECT_EVENT_TYPE = "m.direct"
# "Client Config", "Server Behaviour": types the server manages, rejected with a 405.
SERVER_MANAGED_TYPES = {
    FULLY_READ_EVENT_TYPE: "/rooms/{roomId}/read_markers",
    "m.push_rules": "/pushrules",
}
# "Room Tagging": "The name of a tag MUST NOT exceed 255 bytes."
MAX_TAG_BYTES = 255


def _check_owner(requester: UserID, user_id: UserID) -> None:
    if requester != user_id:
        raise forbidden("Cannot access account data for other users.")


def _check_room_id(room_id: RoomID) -> None:
    """account-data.yaml: 400 M_INVALID_PARAM if ``roomId`` is not a room ID."""
    if not room_id.startswith("!") or len(room_id) < 2:
        raise invalid_param(f"{room_id} is not a valid room ID.")


def _check_settable(data_type: str) -> None:
    endpoint = SERVER_MANAGED_TYPES.get(data_type)
    if endpoint is not None:
        raise MatrixError(
            Errcode.BAD_JSON,
            f"Cannot set {data_type} through this API. Use {endpoint}",
            status=405,
        )


def _events(rows: list[tuple[str, JsonDict]]) -> list[JsonDict]:
    return [{"type": data_type, "content": content} for data_type, content in rows]


def _removed_tags(data_type: str, content: JsonDict) -> bool:
    return data_type == TAG_EVENT_TYPE and not content.get("tags")


def without_removed_tags(events: list[JsonDict]) -> list[JsonDict]:
    """A room's account data for a client that holds none of it: without an ``m.tag``
    whose tags were all removed (as Synapse, which then stores no tags for the room; a
    client that was sent the tags gets ``{"tags": {}}``)."""
    return [e for e in events if not _removed_tags(e["type"], e["content"])]


class AccountDataService:
    def __init__(self, store: AccountDataStore, state: StateService, notifier: Notifier) -> None:
        self._store = store
        self._state = state
        self._notifier = notifier
        self._position = 0
        self._write_lock = asyncio.Lock()
        self.ignored_users = IgnoredUsers(store)

    @property
    def current_position(self) -> int:
        return self._position

    async def start(self) -> None:
        """Resume the stream at its stored position."""
        self._position = await self._store.get_max_stream_id()
        self._notifier.advance(Stream.ACCOUNT_DATA, self._position, ())

    async def resume(self) -> None:
        """Write above what is stored or announced (``wiring.primary`` took the role)."""
        async with self._write_lock:
            stored = await self._store.get_max_stream_id()
            self._position = max(self._position, stored, self._notifier.current_token.account_data)

    async def stored_position(self) -> int:
        """The stream's position in the database, whichever process wrote it (a
        deployment's ``StreamRelay`` compares it with this process's: issue 21)."""
        return await self._store.get_max_stream_id()

    # -- global -------------------------------------------------------------------------

    async def get_global(self, requester: UserID, user_id: UserID, data_type: str) -> JsonDict:
        """``GET /user/{userId}/account_data/{type}``."""
        _check_owner(requester, user_id)
        content = await self._store.get(user_id, GLOBAL, data_type)
        if content is None:
            raise not_found("Account data not found.")
        return content

    async def set_global(
        self, requester: UserID, user_id: UserID, data_type: str, content: JsonDict
    ) -> None:
        """``PUT /user/{userId}/account_data/{type}``; 405 for server-managed types."""
        _check_owner(requester, user_id)
        _check_settable(data_type)
        await self._put(user_id, GLOBAL, data_type, content)

    # -- per room -----------------------------------------------------------------------

    async def get_for_room(
        self, requester: UserID, user_id: UserID, room_id: RoomID, data_type: str
    ) -> JsonDict:
        """``GET /user/{userId}/rooms/{roomId}/account_data/{type}``."""
        _check_owner(requester, user_id)
        _check_room_id(room_id)
        content = await self._store.get(user_id, room_id, data_type)
        if content is None:
            raise not_found("Room account data not found.")
        return content

    async def set_for_room(
        self, requester: UserID, user_id: UserID, room_id: RoomID, data_type: str, content: JsonDict
    ) -> None:
        """``PUT /user/{userId}/rooms/{roomId}/account_data/{type}``; 405 for server-managed
        types (``m.fully_read`` moves only through the read markers API)."""
        _check_owner(requester, user_id)
        _check_room_id(room_id)
        _check_settable(data_type)
        await self._put(user_id, room_id, data_type, content)

    async def get_server_managed(
        self, user_id: UserID, room_id: RoomID, data_type: str
    ) -> JsonDict | None:
        """Room account data read by the service that manages it (no access checks)."""
        return await self._store.get(user_id, room_id, data_type)

    async def set_server_managed(
        self, user_id: UserID, room_id: RoomID, data_type: str, content: JsonDict
    ) -> None:
        """Room account data written by the service that manages it (e.g. ``m.fully_read``
        by the receipts service); no access checks."""
        await self._put(user_id, room_id, data_type, content)

    # -- tags ---------------------------------------------------------------------------

    async def get_tags(self, requester: UserID, user_id: UserID, room_id: RoomID) -> JsonDict:
        """``GET /user/{userId}/rooms/{roomId}/tags``: ``{"tags": {...}}``, empty if none."""
        _check_owner(requester, user_id)
        content = await self._store.get(user_id, room_id, TAG_EVENT_TYPE)
        return {"tags": (content or {}).get("tags", {})}

    async def add_tag(
        self, requester: UserID, user_id: UserID, room_id: RoomID, tag: str, content: JsonDict
    ) -> None:
        """``PUT /user/{userId}/rooms/{roomId}/tags/{tag}``.

        Tag names are at most 255 bytes; ``order`` is a number in [0, 1] ("Room Tagging").
        As in Synapse, only rooms the user has some membership in can be tagged.
        """
        _check_owner(requester, user_id)
        if len(tag.encode()) > MAX_TAG_BYTES:
            raise invalid_param(f"Tag names must not exceed {MAX_TAG_BYTES} bytes")
        order = content.get("order")
        if "order" in content and (
            isinstance(order, bool) or not isinstance(order, int | float) or not 0 <= order <= 1
        ):
            raise invalid_param("'order' must be a number between 0 and 1")
        room = await self._state.get_room(room_id)
        if room is None or user_id not in room.memberships:
            raise forbidden(f"User {user_id} has no membership in room {room_id}")
        async with self._write_lock:
            tags = await self._tags(user_id, room_id)
            tags[tag] = content
            await self._put_locked(user_id, room_id, TAG_EVENT_TYPE, {"tags": tags})

    async def remove_tag(
        self, requester: UserID, user_id: UserID, room_id: RoomID, tag: str
    ) -> None:
        """``DELETE /user/{userId}/rooms/{roomId}/tags/{tag}``; removing a missing tag is
        a no-op."""
        _check_owner(requester, user_id)
        async with self._write_lock:
            tags = await self._tags(user_id, room_id)
            if tags.pop(tag, None) is not None:
                await self._put_locked(user_id, room_id, TAG_EVENT_TYPE, {"tags": tags})

    async def _tags(self, user_id: UserID, room_id: RoomID) -> JsonDict:
        content = await self._store.get(user_id, room_id, TAG_EVENT_TYPE)
        tags = (content or {}).get("tags")
        return dict(tags) if isinstance(tags, dict) else {}

    async def copy_on_room_upgrade(
        self, user_id: UserID, old_room: RoomID, new_room: RoomID
    ) -> None:
        """Carry the user's tags of ``old_room`` to ``new_room`` (unless it has some) and
        list ``new_room`` wherever ``m.direct`` lists ``old_room`` (Client-Server API,
        "Room Upgrades": the server should transfer the user's tags and the like, as
        Synapse does for every local member)."""
        async with self._write_lock:
            tags = await self._tags(user_id, old_room)
            if tags and not await self._tags(user_id, new_room):
                await self._put_locked(user_id, new_room, TAG_EVENT_TYPE, {"tags": tags})
            direct = await self._store.get(user_id, GLOBAL, DIRECT_EVENT_TYPE)
            if not direct:
                return
            changed = {
                other: [*rooms, new_room]
                for other, rooms in direct.items()
                if isinstance(rooms, list) and old_room in rooms and new_room not in rooms
            }
            if changed:
                await self._put_locked(user_id, GLOBAL, DIRECT_EVENT_TYPE, {**direct, **changed})

    # -- sync -----------------------------------------------------------------------------

    async def global_account_data_since(
        self, user_id: UserID, since: int | None, until: int
    ) -> list[JsonDict]:
        """``account_data.events`` of /sync: the user's global account data changed in
        ``(since, until]`` (everything when ``since`` is None or 0), as
        ``{"type", "content"}``."""
        rows = await self._store.get_changed(user_id, since or 0, until, rooms=False)
        return _events([(row.type, row.content) for row in rows])

    async def room_account_data_since(
        self, user_id: UserID, since: int | None, until: int
    ) -> dict[RoomID, list[JsonDict]]:
        """Each room's ``account_data.events`` of /sync: the user's room account data
        (tags included) changed in ``(since, until]``, by room; ``since`` None: all of it,
        for a client that holds none (an initial sync), where a room whose tags were all
        removed has no ``m.tag`` (``without_removed_tags``)."""
        by_room: dict[RoomID, list[tuple[str, JsonDict]]] = {}
        for row in await self._store.get_changed(user_id, since or 0, until, rooms=True):
            if since is None and _removed_tags(row.type, row.content):
                continue
            by_room.setdefault(RoomID(row.room_id), []).append((row.type, row.content))
        return {room_id: _events(rows) for room_id, rows in by_room.items()}

    # -- writes -------------------------------------------------------------------------

    async def _put(
        self, user_id: UserID, room_id: RoomID | str, data_type: str, content: JsonDict
    ) -> None:
        async with self._write_lock:
            await self._put_locked(user_id, room_id, data_type, content)

    async def _put_locked(
        self, user_id: UserID, room_id: RoomID | str, data_type: str, content: JsonDict
    ) -> None:
        position = self._position + 1
        await self._store.put(user_id, room_id, data_type, content, position)
        self.ignored_users.account_data_written(user_id, room_id, data_type)
        self._position = position
        self._notifier.advance(Stream.ACCOUNT_DATA, position, (user_id,))
