"""Server notices (Client-Server API, "Server Notices"): messages from the operator to a
local user, as Synapse's ``ServerNoticesManager`` sends them.

A system user (``server_notices.system_mxid_localpart``, created without a password on
first use) holds one room with each user: its own private room, where the user is
invited (or joined, with ``auto_join``), cannot speak (``users_default`` -10) and which
is tagged ``m.server_notice`` in the user's account data. A user's notices room is the
room the system user is joined to and the user is invited to or joined: a user who left
it gets a new room with the next notice, as in Synapse. The room's name, topic and
avatar and the system user's display name and avatar follow the config: a changed value
is sent to an existing room with its next notice.

A notice to every user goes a page of users at a time (``send_to_page``), each page's
notices a few at once, so the caller (the CLI) bounds and paces the whole run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from peyvand.config.model import ServerNoticesConfig
from peyvand.errors import Errcode, MatrixError
from peyvand.services.rooms.creation import CreateRoomRequest, RoomsService
from peyvand.services.rooms.membership import MembershipService
from peyvand.services.sync.account_data import AccountDataService
from peyvand.services.timeline.event_creation import EventCreationService, EventSpec, TxnKey
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.accounts import AccountStore
from peyvand.storage.errors import ConflictError
from peyvand.storage.local_users import LocalUserStore
from peyvand.types import EventID, JsonDict, RoomID, ServerName, UserID, server_name_of

logger = logging.getLogger(__name__)

# Client-Server API, "Server Notices": the tag of the room and the message type.
SERVER_NOTICE_TAG: Final = "m.server_notice"
SERVER_NOTICE_MSGTYPE: Final = "m.server_notice"
# Below events_default (0): the user may not send in their notices room (as Synapse).
_USERS_DEFAULT: Final = -10
MAX_PAGE: Final = 1000
_PAGE_CONCURRENCY: Final = 4
# State a notice may not set: the event types the authorization rules read (Server-Server
# API, "Authorization rules": create, power levels, join rules, members, third-party
# invites) and the state that decides who may see, reach or leave the room for another
# (history visibility, guest access, server ACLs, tombstone, encryption). A notice that
# sets these would undo the room's rules, e.g. reset the power levels so the user may speak.
_REFUSED_STATE_TYPES: Final = frozenset(
    {
        "m.room.create",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.member",
        "m.room.third_party_invite",
        "m.room.history_visibility",
        "m.room.guest_access",
        "m.room.server_acl",
        "m.room.tombstone",
        "m.room.encryption",
    }
)


@dataclass(frozen=True, slots=True)
class PageResult:
    """What one page of a notice to everyone did: how many got it, who could not get
    it, and the user to continue after (None: that was the last page)."""

    sent: int
    failed: tuple[UserID, ...]
    next_from: UserID | None


def system_user_of(config: ServerNoticesConfig, server_name: ServerName) -> UserID | None:
    """The user that sends server notices; None when they are off."""
    localpart = config.system_mxid_localpart
    return None if localpart is None else UserID(f"@{localpart}:{server_name}")


def notices_disabled() -> MatrixError:
    return MatrixError(Errcode.UNKNOWN, "Server notices are not enabled on this server")


class ServerNoticesService:
    def __init__(
        self,
        server_name: ServerName,
        config: ServerNoticesConfig,
        accounts: AccountStore,
        users: LocalUserStore,
        index: RoomIndex,
        state: StateService,
        rooms: RoomsService,
        membership: MembershipService,
        account_data: AccountDataService,
        events: EventCreationService,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._server_name = server_name
        self._config = config
        self._accounts = accounts
        self._users = users
        self._index = index
        self._state = state
        self._rooms = rooms
        self._membership = membership
        self._account_data = account_data
        self._events = events
        self._clock = clock
        self.system_user = system_user_of(config, server_name)
        # The system user exists with the configured profile (checked once a process).
        self._system_user_ready = False
        # One notice at a time per user, so two notices never make two rooms.
        self._locks: weakref.WeakValueDictionary[UserID, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    @property
    def enabled(self) -> bool:
        return self.system_user is not None

    async def check_recipient(self, user_id: str) -> UserID:
        """The user a notice may go to: 400 if notices are off, the user is not local or
        is the system user (who has no notices room of their own), 404 if there is no such
        user (Synapse's admin API answers)."""
        if self.system_user is None:
            raise notices_disabled()
        if server_name_of(user_id) != self._server_name:
            raise MatrixError(Errcode.UNKNOWN, "Server notices can only be sent to local users")
        if user_id == self.system_user:
            raise MatrixError(
                Errcode.INVALID_PARAM, "Server notices cannot be sent to the server notices user"
            )
        if await self._accounts.get_user(user_id) is None:
            raise MatrixError(Errcode.NOT_FOUND, "User not found")
        return UserID(user_id)

    async def send_notice(
        self,
        user_id: UserID,
        content: JsonDict,
        event_type: str = "m.room.message",
        state_key: str | None = None,
        *,
        txn: TxnKey | None = None,
    ) -> EventID:
        """Send ``content`` to ``user_id``'s notices room (made first if there is none)
        from the system user; the event's ID. ``user_id`` has passed ``check_recipient``.
        400 ``M_INVALID_PARAM`` for a membership, or for state of a type in
        ``_REFUSED_STATE_TYPES``."""
        system_user = self.system_user
        if system_user is None:
            raise notices_disabled()
        if event_type == "m.room.member":
            # Memberships go through the membership rules, not as a notice.
            raise MatrixError(Errcode.INVALID_PARAM, "Cannot send membership events as notices")
        if state_key is not None and event_type in _REFUSED_STATE_TYPES:
            raise MatrixError(
                Errcode.INVALID_PARAM, f"Cannot send {event_type} state events as notices"
            )
        async with self._locks.setdefault(user_id, asyncio.Lock()):
            await self._ensure_system_user(system_user)
            room_id = await self.notice_room_of(user_id)
            if room_id is None:
                room_id = await self._create_room(system_user, user_id)
            else:
                await self._update_room(system_user, room_id)
            spec = EventSpec(event_type, content, state_key)
            stored = await self._events.send(room_id, system_user, spec, txn=txn)
        logger.info("server notice %s sent to %s", stored.pdu.event_id, user_id)
        return stored.pdu.event_id

    async def send_to_page(self, content: JsonDict, after: str, limit: int) -> PageResult:
        """Send ``content`` to the next ``limit`` (at most ``MAX_PAGE``) active local
        users after ``after`` in user ID order, a few at once; a user whose notice fails
        is reported, not retried."""
        if self.system_user is None:
            raise notices_disabled()
        users = await self._users.active_users_after(after, min(limit, MAX_PAGE))
        pending = iter(u for u in users if u != self.system_user)
        sent: list[UserID] = []
        failed: list[UserID] = []

        async def worker() -> None:
            for user_id in pending:
                try:
                    await self.send_notice(user_id, content)
                except MatrixError as exc:
                    logger.warning("server notice to %s failed: %s", user_id, exc)
                    failed.append(user_id)
                else:
                    sent.append(user_id)

        async with asyncio.TaskGroup() as group:
            for _ in range(min(_PAGE_CONCURRENCY, len(users))):
                group.create_task(worker())
        next_from = users[-1] if users and len(users) == min(limit, MAX_PAGE) else None
        return PageResult(len(sent), tuple(sorted(failed)), next_from)

    async def notice_room_of(self, user_id: UserID) -> RoomID | None:
        """The room the system user is joined to and ``user_id`` invited to or joined;
        None for the system user, who has no notices room of their own."""
        if self.system_user is None or user_id == self.system_user:
            return None
        mine = await self._index.memberships(user_id)
        system = await self._index.memberships(self.system_user)
        candidates = sorted(
            (stream, room_id)
            for room_id, (membership, stream) in mine.items()
            if membership in ("invite", "join") and system.get(room_id, ("",))[0] == "join"
        )
        return candidates[-1][1] if candidates else None

    async def is_notice_room(self, room_id: RoomID) -> bool:
        """Whether the system user is joined to ``room_id``."""
        if self.system_user is None:
            return False
        return await self._membership.membership_of(room_id, self.system_user) == "join"

    async def _ensure_system_user(self, system_user: UserID) -> None:
        """Create the system user on first use, its profile as the config has it."""
        if self._system_user_ready:
            return
        user = await self._accounts.get_user(system_user)
        if user is None:
            with contextlib.suppress(ConflictError):  # created meanwhile
                await self._accounts.create_user(
                    system_user, None, is_admin=False, created_ts=int(self._clock() * 1000)
                )
                logger.info("created the server notices user %s", system_user)
        displayname = self._config.system_mxid_display_name
        avatar_url = self._config.system_mxid_avatar_url
        if user is None or user.displayname != displayname:
            await self._accounts.set_displayname(system_user, displayname)
        if user is None or user.avatar_url != avatar_url:
            await self._accounts.set_avatar_url(system_user, avatar_url)
        self._system_user_ready = True

    async def _create_room(self, system_user: UserID, user_id: UserID) -> RoomID:
        config = self._config
        initial_state: tuple[EventSpec, ...] = ()
        if config.room_avatar_url:
            initial_state = (EventSpec("m.room.avatar", {"url": config.room_avatar_url}, ""),)
        room_id = await self._rooms.create_room(
            CreateRoomRequest(
                creator=system_user,
                preset="private_chat",
                name=config.room_name or None,
                topic=config.room_topic or None,
                invite=(user_id,),
                initial_state=initial_state,
                power_level_content_override={"users_default": _USERS_DEFAULT},
            )
        )
        await self._account_data.add_tag(user_id, user_id, room_id, SERVER_NOTICE_TAG, {})
        if config.auto_join:
            await self._membership.join(room_id, user_id)
        logger.info("created server notices room %s for %s", room_id, user_id)
        return room_id

    async def _update_room(self, system_user: UserID, room_id: RoomID) -> None:
        """Bring an existing room's name, topic, avatar and the system user's member
        event in line with the config (nothing is sent when they already are)."""
        config = self._config
        snapshot = await self._state.get_room(room_id)
        if snapshot is None:
            return
        wanted: dict[tuple[str, str], tuple[str, str | None]] = {
            ("m.room.name", ""): ("name", config.room_name or None),
            ("m.room.topic", ""): ("topic", config.room_topic),
            ("m.room.avatar", ""): ("url", config.room_avatar_url),
        }
        member_key = ("m.room.member", system_user)
        current = await self._state.get_state_events(snapshot.state, [*wanted, member_key])
        for (event_type, state_key), (key, value) in wanted.items():
            event = current.get((event_type, state_key))
            existing: Any = None if event is None else event.content.get(key)
            if (existing or None) != value:
                spec = EventSpec(event_type, {key: value or ""}, state_key)
                await self._events.send(room_id, system_user, spec)
        member = current.get(member_key)
        profile = {
            "displayname": config.system_mxid_display_name,
            "avatar_url": config.system_mxid_avatar_url,
        }
        if member is not None and any(member.content.get(k) != v for k, v in profile.items()):
            content = {k: v for k, v in profile.items() if v is not None}
            await self._membership.join(room_id, system_user, content=content)
