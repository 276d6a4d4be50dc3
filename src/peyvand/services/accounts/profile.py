"""Profiles (Client-Server API, "Profiles"): display name, avatar URL and custom fields
(v1.16, rules in ``profile_fields``) of local users, and of users of other servers, asked
with ``/query/profile`` (Server-Server API, "Querying for information"). Whole remote
profiles are kept for a minute (at most 10,000 of them, least recently used dropped
first) and concurrent requests for one user share one query; one custom field of a
remote user is asked with ``field=`` each time, as Synapse asks it.

A local user who does not exist yet but is in an application service's user namespace
(a bridge's ghost, created on demand) is asked of that appservice first (Application
Service API, "Query User"), when their profile is read or a membership event about them
(an invite) is built; if it answers that the user exists, the user is looked up again.

Custom fields stay in the profile: unlike display name and avatar URL they are not
copied into member events (as in Synapse).

A change is copied into the user's ``m.room.member`` event of every room they are joined
to, as Synapse does ("Events on change of profile information"): a new join event with
the new profile, a few rooms at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Final

from peyvand.errors import Errcode, MatrixError
from peyvand.lru import LRU
from peyvand.services.accounts.profile_fields import (
    AVATAR_URL,
    DISPLAYNAME,
    MEMBER_FIELDS,
    check_key,
    check_size,
)
from peyvand.services.timeline.event_creation import EventCreationService, EventSpec
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.accounts import AccountStore, UserRow
from peyvand.storage.events import EventStore
from peyvand.storage.profile_fields import ProfileFieldStore
from peyvand.types import JsonDict, RoomID, ServerName, UserID, is_valid_user_id, server_name_of

logger = logging.getLogger(__name__)

# Synapse's limits (handlers/profile.py).
MAX_DISPLAYNAME_LEN = 256
MAX_AVATAR_URL_LEN = 1000
# Appendices, "Matrix Content (MXC) URIs": mxc://<server-name>/<media-id>.
# Rooms whose member event is updated at the same time after a profile change.
_PROPAGATION_CONCURRENCY = 8
REMOTE_PROFILE_TTL: Final = 60.0  # seconds
_REMOTE_PROFILE_CACHE_SIZE: Final = 10_000

# (user, one field or None for the whole profile) -> what the user's server answered.
RemoteProfileQuery = Callable[[UserID, str | None], Awaitable[JsonDict]]
# Asks the appservices whose namespace holds an unknown local user; True if one made it.
AppServiceUserQuery = Callable[[UserID], Awaitable[bool]]


async def no_remote_profiles(user_id: UserID, field: str | None) -> JsonDict:
    """``RemoteProfileQuery`` where federation is off: another server's user is unknown."""
    raise MatrixError(Errcode.NOT_FOUND, "Profile was not found")


class ProfileService:
    def __init__(
        self,
        server_name: ServerName,
        accounts: AccountStore,
        fields: ProfileFieldStore,
        event_store: EventStore,
        state: StateService,
        events: EventCreationService,
        remote_query: RemoteProfileQuery,
        appservice_user_query: AppServiceUserQuery,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Other servers' users' profiles are asked with ``remote_query``, unknown local
        users in an appservice's namespace with ``appservice_user_query``."""
        self._appservice_user_query = appservice_user_query
        self._server_name = server_name
        self._accounts = accounts
        self._fields = fields
        self._event_store = event_store
        self._state = state
        self._events = events
        # One change at a time per user, so member events follow the order of changes.
        self._locks: weakref.WeakValueDictionary[UserID, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._clock = clock
        self._remote_query = remote_query
        # user -> (when fetched, profile); and the queries in flight.
        self._remote: LRU[UserID, tuple[float, JsonDict]] = LRU(_REMOTE_PROFILE_CACHE_SIZE)
        self._remote_pending: dict[UserID, asyncio.Task[JsonDict]] = {}

    async def _local_user(self, user_id: str) -> UserRow:
        if not is_valid_user_id(user_id):
            raise MatrixError(Errcode.INVALID_PARAM, "Invalid user id")
        user = None
        if server_name_of(user_id) == self._server_name:
            user = await self._get_user(UserID(user_id))
        if user is None:
            raise MatrixError(Errcode.NOT_FOUND, "Profile was not found")
        return user

    async def _get_user(self, user_id: UserID) -> UserRow | None:
        """A local user, asked of the appservices first if unknown (see the docstring)."""
        user = await self._accounts.get_user(user_id)
        if user is None and await self._appservice_user_query(user_id):
            user = await self._accounts.get_user(user_id)
        return user

    @staticmethod
    def _profile(user: UserRow) -> JsonDict:
        profile: JsonDict = {}
        if user.displayname is not None:
            profile["displayname"] = user.displayname
        if user.avatar_url is not None:
            profile["avatar_url"] = user.avatar_url
        return profile

    async def get_profile(self, user_id: str) -> JsonDict:
        """The profile of a user, custom fields included (unset fields left out); 404 if
        there is no such user. A user of another server is asked of that server (or
        answered from the cache)."""
        if is_valid_user_id(user_id) and server_name_of(user_id) != self._server_name:
            return dict(await self._remote_profile(UserID(user_id)))
        user = await self._local_user(user_id)
        return {**await self._fields.get_fields(user.user_id), **self._profile(user)}

    async def get_field(self, user_id: str, key: str) -> JsonDict:
        """``GET /profile/{userId}/{keyName}``: ``{key: value}``. An unset display name
        or avatar is ``{}``, an unset custom field 404 ``M_NOT_FOUND`` (as Synapse
        answers both)."""
        check_key(key)
        if is_valid_user_id(user_id) and server_name_of(user_id) != self._server_name:
            profile = await self._remote_field(UserID(user_id), key)
        else:
            user = await self._local_user(user_id)
            if key in MEMBER_FIELDS:
                profile = self._profile(user)
            else:
                present, value = await self._fields.get_field(user.user_id, key)
                profile = {key: value} if present else {}
        if key in profile:
            return {key: profile[key]}
        if key in MEMBER_FIELDS:
            return {}
        raise MatrixError(Errcode.NOT_FOUND, "Profile field was not found")

    async def _remote_field(self, user_id: UserID, key: str) -> JsonDict:
        """One field of another server's user: display name and avatar from the cached
        profile, a custom field asked with ``field=``."""
        if key in MEMBER_FIELDS:
            return await self._remote_profile(user_id)
        return await self._remote_query(user_id, key)

    async def _remote_profile(self, user_id: UserID) -> JsonDict:
        cached = self._remote.get(user_id)
        if cached is not None and self._clock() - cached[0] < REMOTE_PROFILE_TTL:
            return cached[1]
        task = self._remote_pending.get(user_id)
        if task is None:
            task = asyncio.create_task(
                self._fetch_remote(user_id), name=f"remote profile {user_id}"
            )
            self._remote_pending[user_id] = task
            task.add_done_callback(self._query_done)
        # Shielded: a client that goes away does not cancel the query for the others.
        return await asyncio.shield(task)

    async def _fetch_remote(self, user_id: UserID) -> JsonDict:
        try:
            profile = await self._remote_query(user_id, None)
        finally:
            self._remote_pending.pop(user_id, None)
        self._remote.put(user_id, (self._clock(), profile))
        return profile

    @staticmethod
    def _query_done(task: asyncio.Task[JsonDict]) -> None:
        """Its error was given to whoever still waited; none is left unretrieved."""
        if not task.cancelled():
            task.exception()

    async def profile_of(self, user_id: UserID) -> JsonDict:
        """The profile to put in a new membership event: ``{}`` for unknown users."""
        user = None
        if server_name_of(user_id) == self._server_name:
            user = await self._get_user(user_id)
        return {} if user is None else self._profile(user)

    async def set_field(self, requester: UserID, user_id: str, key: str, value: Any) -> None:
        """``PUT /profile/{userId}/{keyName}``: the requester's own field. A display name
        or avatar must be a string (``""`` clears it); a custom field may hold any JSON,
        null included (stored, not deleted, as the spec recommends)."""
        check_key(key)
        if key == DISPLAYNAME:
            if not isinstance(value, str):
                raise MatrixError(Errcode.INVALID_PARAM, "'displayname' must be a string")
            await self.set_displayname(requester, user_id, value)
        elif key == AVATAR_URL:
            if not isinstance(value, str):
                raise MatrixError(Errcode.INVALID_PARAM, "'avatar_url' must be a string")
            await self.set_avatar_url(requester, user_id, value)
        else:
            await self._set(requester, user_id, key, value)

    async def delete_field(self, requester: UserID, user_id: str, key: str) -> None:
        """``DELETE /profile/{userId}/{keyName}``: a display name or avatar is cleared, a
        custom field removed; removing a field that is not set is no error."""
        check_key(key)
        if key in MEMBER_FIELDS:
            await self.set_field(requester, user_id, key, "")
            return
        self._check_own(requester, user_id, key)
        async with self._locks.setdefault(requester, asyncio.Lock()):
            await self._local_user(user_id)
            await self._fields.delete_field(requester, key)

    async def set_displayname(self, requester: UserID, user_id: str, displayname: str) -> None:
        """Set the requester's own display name; ``""`` clears it."""
        if len(displayname) > MAX_DISPLAYNAME_LEN:
            raise MatrixError(
                Errcode.INVALID_PARAM, f"Displayname is too long (max {MAX_DISPLAYNAME_LEN})"
            )
        await self._set(requester, user_id, DISPLAYNAME, displayname.strip() or None)

    async def set_avatar_url(self, requester: UserID, user_id: str, avatar_url: str) -> None:
        """Set the requester's own avatar; ``""`` clears it. Any string up to the length
        limit is kept, as Synapse keeps it: clients show ``mxc://`` URIs, and the spec's
        schema only asks for a URI."""
        if len(avatar_url) > MAX_AVATAR_URL_LEN:
            raise MatrixError(
                Errcode.INVALID_PARAM, f"Avatar URL is too long (max {MAX_AVATAR_URL_LEN})"
            )
        await self._set(requester, user_id, AVATAR_URL, avatar_url or None)

    @staticmethod
    def _check_own(requester: UserID, user_id: str, field: str) -> None:
        """400 for a malformed user ID, 403 for another user's profile."""
        if not is_valid_user_id(user_id):
            raise MatrixError(Errcode.INVALID_PARAM, "Invalid user id")
        if user_id != requester:
            raise MatrixError(Errcode.FORBIDDEN, f"Cannot set another user's {field}")

    async def _set(self, requester: UserID, user_id: str, field: str, value: Any) -> None:
        """Set one field (None clears a display name or avatar), the whole profile kept
        within its size limit; a change of display name or avatar reaches the member
        events of the user's rooms."""
        self._check_own(requester, user_id, field)
        async with self._locks.setdefault(requester, asyncio.Lock()):
            user = await self._local_user(user_id)
            profile = {**await self._fields.get_fields(requester), **self._profile(user)}
            if value is not None or field not in MEMBER_FIELDS:
                check_size(profile, field, value)
            if field == DISPLAYNAME:
                await self._accounts.set_displayname(requester, value)
            elif field == AVATAR_URL:
                await self._accounts.set_avatar_url(requester, value)
            else:
                await self._fields.set_field(requester, field, value)
                return
            await self._propagate(requester, await self.profile_of(requester))

    async def _propagate(self, user_id: UserID, profile: JsonDict) -> None:
        """Send a new join event with ``profile`` to each room ``user_id`` is joined to."""
        memberships = await self._event_store.get_memberships_for_user(user_id)
        joined = sorted(r for r, (m, _) in memberships.items() if m == "join")
        pending = iter(joined)
        content: JsonDict = {"membership": "join", **profile}

        async def worker() -> None:
            for room_id in pending:
                await self._update_room(room_id, user_id, content)

        async with asyncio.TaskGroup() as group:
            for _ in range(min(_PROPAGATION_CONCURRENCY, len(joined))):
                group.create_task(worker())

    async def _update_room(self, room_id: RoomID, user_id: UserID, content: JsonDict) -> None:
        snapshot = await self._state.get_room(room_id)
        if snapshot is None or snapshot.memberships.get(user_id) != "join":
            return
        current = await self._state.get_state_events(snapshot.state, [("m.room.member", user_id)])
        member = current.get(("m.room.member", user_id))
        if member is not None and dict(member.content) == content:
            return
        try:
            await self._events.send(room_id, user_id, EventSpec("m.room.member", content, user_id))
        except MatrixError as exc:
            logger.warning("profile change of %s not sent to %s: %s", user_id, room_id, exc)
