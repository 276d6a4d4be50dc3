"""Listing a user's notifications (Client-Server API, "Push Notifications": "Listing
notifications", GET /_matrix/client/v3/notifications; notifications.yaml).

The notifying events come from the push rows (``storage.notifications``), newest first;
``from`` is the stream position of the last one of the previous page. Only whether an
event notified and highlighted is stored, not its actions, so each notification's
``actions`` are rebuilt from those: ``notify``, with ``set_tweak: highlight`` and the
default sound when it highlights (what the default highlighting rules give). ``read``:
the event is at or before the user's read receipt in that room (unthreaded, or of its
own thread; or their read mark, from their own later event), as Synapse compares
receipts. ``ts`` is the event's ``origin_server_ts`` (no time of arrival is stored).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final, Protocol

from peyvand.errors import Errcode, MatrixError
from peyvand.services.accounts.requester import Requester
from peyvand.storage.models import StoredEvent
from peyvand.storage.notifications import Notification, NotificationStore, is_read
from peyvand.types import EventID, JsonDict, UserID

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 100
ONLY_HIGHLIGHT: Final = "highlight"
# Stream positions are BIGINT.
_MAX_POSITION: Final = 2**63 - 1

IgnoredUsers = Callable[[UserID], Awaitable[frozenset[UserID]]]


class Events(Protocol):
    async def get_events(self, event_ids: Iterable[EventID]) -> dict[EventID, StoredEvent]: ...


class Serializer(Protocol):
    async def serialize(
        self,
        events: Sequence[StoredEvent],
        requester: Requester | None,
        *,
        include_room_id: bool = True,
        federation_format: bool = False,
    ) -> list[JsonDict]: ...


class NotificationsService:
    def __init__(
        self,
        store: NotificationStore,
        events: Events,
        serializer: Serializer,
        ignored_users: IgnoredUsers,
    ) -> None:
        self._store = store
        self._events = events
        self._serializer = serializer
        self._ignored_users = ignored_users

    async def list(
        self, requester: Requester, from_token: str | None, limit: int, only: str | None
    ) -> JsonDict:
        """GET /notifications: a page of at most ``limit`` (up to ``MAX_LIMIT``) of the
        user's notifications, newest first, and ``next_token`` when the page is full."""
        before = _parse_from(from_token)
        page = min(limit, MAX_LIMIT)
        user_id = requester.user_id
        found = await self._store.notifications_for_user(
            user_id,
            before=before,
            limit=page,
            only_highlight=only == ONLY_HIGHLIGHT,
            ignored=await self._ignored_users(user_id),
        )
        events = await self._events.get_events(n.event_id for n in found)
        listed = [n for n in found if n.event_id in events]
        serialized = await self._serializer.serialize(
            [events[n.event_id] for n in listed], requester, include_room_id=False
        )
        read = await self._store.read_positions(user_id, sorted({n.room_id for n in listed}))
        body: JsonDict = {
            "notifications": [
                {
                    "actions": _actions(n),
                    "event": event,
                    "read": is_read(n, read),
                    "room_id": n.room_id,
                    "ts": n.ts,
                }
                for n, event in zip(listed, serialized, strict=True)
            ]
        }
        if found and len(found) == page:
            body["next_token"] = str(found[-1].stream_ordering)
        return body


def _parse_from(token: str | None) -> int | None:
    """``from``: a ``next_token`` handed out before, a stream position."""
    if token is None:
        return None
    if not token.isascii() or not token.isdigit() or int(token) > _MAX_POSITION:
        raise MatrixError(Errcode.INVALID_PARAM, "Unrecognised 'from' token")
    return int(token)


def _actions(n: Notification) -> list[object]:
    if n.highlight:
        return [
            "notify",
            {"set_tweak": "sound", "value": "default"},
            {"set_tweak": "highlight"},
        ]
    return ["notify"]
