"""Room membership (Client-Server API, "Room membership"): join, leave, invite, kick,
ban, unban, forget. Every change is an ``m.room.member`` event checked by the auth rules;
this service adds what the rules leave to the server (idempotent joins, profile data)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from peyvand.errors import Errcode, MatrixError
from peyvand.events.pdu import Pdu
from peyvand.keyed_locks import KeyedLocks
from peyvand.services.rooms.guest_access import GuestAccess
from peyvand.services.rooms.policy_lists import PolicyListService
from peyvand.services.rooms.restricted_joins import join_authoriser
from peyvand.services.timeline.event_creation import Countersign, EventCreationService, EventSpec
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.storage.forgotten_rooms import ForgottenRoomStore
from peyvand.storage.models import StoredEvent
from peyvand.storage.remote_invites import RemoteInvite
from peyvand.types import JsonDict, RoomID, ServerName, UserID, is_valid_user_id, server_name_of

ProfileLookup = Callable[[UserID], Awaitable[JsonDict]]


class RemoteMemberships(Protocol):
    """Membership in rooms on other servers (the federation service)."""

    async def invite_remote(self, pdu: Pdu, snapshot: RoomSnapshot) -> Pdu: ...

    async def join_remote(
        self, room_id: RoomID, user_id: UserID, servers: Sequence[ServerName], content: JsonDict
    ) -> None: ...

    async def remote_invite(self, room_id: RoomID, user_id: UserID) -> RemoteInvite | None: ...

    async def reject_invite(self, room_id: RoomID, user_id: UserID, reason: str | None) -> None: ...

    async def forget_invite(self, room_id: RoomID, user_id: UserID) -> None: ...

    async def knock_remote(
        self, room_id: RoomID, user_id: UserID, servers: Sequence[ServerName], reason: str | None
    ) -> None: ...


class Unfederated:
    """``RemoteMemberships`` where federation is off: rooms on other servers can be
    neither joined nor knocked on, and their users not invited."""

    async def invite_remote(self, pdu: Pdu, snapshot: RoomSnapshot) -> Pdu:
        raise MatrixError(Errcode.FORBIDDEN, "Federation is disabled on this server")

    async def join_remote(
        self, room_id: RoomID, user_id: UserID, servers: Sequence[ServerName], content: JsonDict
    ) -> None:
        raise MatrixError(Errcode.NOT_FOUND, "No known servers to join this room through")

    async def remote_invite(self, room_id: RoomID, user_id: UserID) -> RemoteInvite | None:
        return None

    async def reject_invite(self, room_id: RoomID, user_id: UserID, reason: str | None) -> None:
        return None

    async def forget_invite(self, room_id: RoomID, user_id: UserID) -> None:
        return None

    async def knock_remote(
        self, room_id: RoomID, user_id: UserID, servers: Sequence[ServerName], reason: str | None
    ) -> None:
        raise MatrixError(Errcode.NOT_FOUND, "No known servers to knock through")


class MembershipService:
    def __init__(
        self,
        server_name: ServerName,
        events: EventCreationService,
        state: StateService,
        store: ForgottenRoomStore,
        profile_of: ProfileLookup,
        federation: RemoteMemberships,
        policy_lists: PolicyListService,
        guest_access: GuestAccess,
        *,
        wait_for_full_state: Callable[[RoomID], Awaitable[None]] | None = None,
        server_notices_user: UserID | None = None,
    ) -> None:
        """``policy_lists`` refuses the joins, knocks and invites the moderation policy
        lists ban; ``guest_access`` lets guests join only the rooms that allow them;
        ``wait_for_full_state`` returns once a room joined with partial state has its
        full state (at once for any other room; None: federation is off); an invite to
        a room ``server_notices_user`` is joined to cannot be rejected."""
        self._server_name = server_name
        self._events = events
        self._state = state
        self._store = store
        self._profile_of = profile_of
        self._federation = federation
        self._policy_lists = policy_lists
        self._guest_access = guest_access
        self._wait_for_full_state = wait_for_full_state
        self._server_notices_user = server_notices_user
        self._remote_joins = KeyedLocks()

    async def membership_of(self, room_id: RoomID, user_id: UserID) -> str | None:
        snapshot = await self._state.get_room(room_id)
        return None if snapshot is None else snapshot.memberships.get(user_id)

    async def _resident(self, room_id: RoomID) -> RoomSnapshot | None:
        """The room's snapshot if this server takes part in it; otherwise its state here
        may be stale and membership goes through a server that is in the room."""
        snapshot = await self._state.get_room(room_id)
        return snapshot if snapshot is not None and snapshot.takes_part(self._server_name) else None

    async def _change(
        self,
        room_id: RoomID,
        sender: UserID,
        target: UserID,
        membership: str,
        *,
        reason: str | None = None,
        extra: JsonDict | None = None,
        txn: tuple[str, str, str] | None = None,
        origin_server_ts: int | None = None,
    ) -> StoredEvent:
        if not is_valid_user_id(target):
            raise MatrixError(Errcode.INVALID_PARAM, f"Invalid user ID: {target}")
        snapshot = await self._state.get_room(room_id)
        if snapshot is None:
            raise MatrixError(Errcode.NOT_FOUND, "Unknown room")
        content: JsonDict = {"membership": membership}
        if membership in ("join", "invite") and server_name_of(target) == self._server_name:
            content.update(await self._profile_of(target))
        if membership == "join":
            authoriser = await join_authoriser(self._state, snapshot, target, self._server_name)
            if authoriser is not None:
                content["join_authorised_via_users_server"] = authoriser
        if extra:
            content.update(extra)
        if reason is not None:
            content["reason"] = reason
        unchanged = await self._unchanged_member_event(snapshot, sender, target, content)
        if unchanged is not None:
            return unchanged
        countersign: Countersign | None = None
        if membership == "invite" and server_name_of(target) != self._server_name:
            countersign = self._federation.invite_remote
        event = await self._events.send(
            room_id,
            sender,
            EventSpec("m.room.member", content, target, origin_server_ts=origin_server_ts),
            txn=txn,
            countersign=countersign,
        )
        if membership != "leave" or sender != target:
            await self._store.set_forgotten(target, room_id, False)
        return event

    async def _unchanged_member_event(
        self, snapshot: RoomSnapshot, sender: UserID, target: UserID, content: JsonDict
    ) -> StoredEvent | None:
        """The target's current member event if sending ``content`` would repeat it (same
        sender, same content): nothing new is sent then, as Synapse does."""
        event_id = snapshot.state.get(("m.room.member", target))
        current = None if event_id is None else await self._state.get_event(event_id)
        if current is None or current.pdu.sender != sender or current.pdu.content != content:
            return None
        return current

    async def join(
        self,
        room_id: RoomID,
        user_id: UserID,
        reason: str | None = None,
        servers: Sequence[ServerName] = (),
        content: JsonDict | None = None,
        origin_server_ts: int | None = None,
    ) -> None:
        """Join (or re-join); a join while already joined sends nothing new unless it
        brings ``content``: extra keys for the member event, such as a per-room
        ``displayname`` (kept as given, as Synapse does). A room this server is not in is
        joined over federation through ``servers``.

        A room this server joined with partial state (MSC3706) is joined locally once
        its state is complete: until then the state lacks most member events, so a ban
        of the user, or the membership a restricted join rule asks of the authorising
        user, would go unseen, and the new member would read history it may not. Synapse
        joins through a resident server instead; waiting (bounded: 503 after it, as the
        reads that need every member) is simpler, the resync takes seconds even for big
        rooms, and the join is then checked here against the full state. A user already
        joined (a profile change) does not wait, as in Synapse."""
        current = await self.membership_of(room_id, user_id)
        if current == "join" and not content:
            return
        await self._policy_lists.check_join(room_id, user_id)
        snapshot = await self._resident(room_id)
        await self._guest_access.check_join(user_id, snapshot)
        if snapshot is None:
            # One remote join per room at a time: a second local user joining meanwhile
            # then finds the room here and joins locally.
            async with self._remote_joins.hold(room_id):
                snapshot = await self._resident(room_id)
                if snapshot is None:
                    await self._join_remote(room_id, user_id, reason, servers)
            if snapshot is None:
                return
        if current != "join" and self._wait_for_full_state is not None:
            await self._wait_for_full_state(room_id)
        # Never the membership itself, nor an authorising user the client cannot vouch for.
        extra = {
            k: v
            for k, v in (content or {}).items()
            if k not in ("membership", "join_authorised_via_users_server")
        }
        await self._change(
            room_id,
            user_id,
            user_id,
            "join",
            reason=reason,
            extra=extra,
            origin_server_ts=origin_server_ts,
        )

    async def _join_remote(
        self, room_id: RoomID, user_id: UserID, reason: str | None, servers: Sequence[ServerName]
    ) -> None:
        invite = await self._federation.remote_invite(room_id, user_id)
        if invite is not None:
            servers = [*servers, server_name_of(invite.sender)]
        if not servers:
            raise MatrixError(Errcode.NOT_FOUND, "No known servers to join this room through")
        content: JsonDict = dict(await self._profile_of(user_id))
        if reason is not None:
            content["reason"] = reason
        await self._federation.join_remote(room_id, user_id, servers, content)
        if invite is not None:
            await self._federation.forget_invite(room_id, user_id)

    async def knock(
        self,
        room_id: RoomID,
        user_id: UserID,
        reason: str | None = None,
        servers: Sequence[ServerName] = (),
        origin_server_ts: int | None = None,
    ) -> None:
        """Ask to join a room with the ``knock`` join rule (Client-Server API, "Knocking on
        rooms"); a room this server is not in is knocked on over federation."""
        current = await self.membership_of(room_id, user_id)
        if current in ("join", "invite", "ban"):
            raise MatrixError(
                Errcode.FORBIDDEN, f"You cannot knock while your membership is {current}"
            )
        await self._policy_lists.check_join(room_id, user_id)
        if await self._resident(room_id) is None:
            if not servers:
                raise MatrixError(Errcode.NOT_FOUND, "No known servers to knock through")
            await self._federation.knock_remote(room_id, user_id, servers, reason)
            return
        if current == "knock":
            return
        await self._change(
            room_id, user_id, user_id, "knock", reason=reason, origin_server_ts=origin_server_ts
        )

    async def leave(
        self,
        room_id: RoomID,
        user_id: UserID,
        reason: str | None = None,
        origin_server_ts: int | None = None,
    ) -> None:
        if (
            await self._resident(room_id) is None
            and await self._federation.remote_invite(room_id, user_id) is not None
        ):
            # An invite to a room this server is not in: reject it through its server.
            await self._federation.reject_invite(room_id, user_id, reason)
            return
        current = await self.membership_of(room_id, user_id)
        if current in (None, "leave"):
            if current is None:
                raise MatrixError(Errcode.FORBIDDEN, "You are not a member of this room")
            return
        if current == "invite" and await self._is_server_notices_room(room_id):
            # As Synapse: the invite to one's server notices room stays (once joined,
            # the room may be left; the next notice comes in a new room).
            raise MatrixError(
                Errcode.CANNOT_LEAVE_SERVER_NOTICE_ROOM, "You cannot reject this invite"
            )
        await self._change(
            room_id, user_id, user_id, "leave", reason=reason, origin_server_ts=origin_server_ts
        )

    async def _is_server_notices_room(self, room_id: RoomID) -> bool:
        if self._server_notices_user is None:
            return False
        return await self.membership_of(room_id, self._server_notices_user) == "join"

    async def invite(
        self,
        room_id: RoomID,
        sender: UserID,
        target: UserID,
        reason: str | None = None,
        *,
        is_direct: bool = False,
        origin_server_ts: int | None = None,
    ) -> None:
        """Invite ``target``; a user of another server through its server (``/invite``
        v2, countersigned) before the event is stored. ``is_direct`` marks a direct chat
        (createRoom's ``is_direct``)."""
        current = await self.membership_of(room_id, target)
        if current == "invite":
            return
        if current in ("join", "ban"):
            raise MatrixError(
                Errcode.FORBIDDEN,
                f"{target} is already {current}ned"
                if current == "ban"
                else f"{target} is already in the room",
            )
        await self._policy_lists.check_invite(room_id, sender, target)
        extra: JsonDict | None = {"is_direct": True} if is_direct else None
        await self._change(
            room_id,
            sender,
            target,
            "invite",
            reason=reason,
            extra=extra,
            origin_server_ts=origin_server_ts,
        )

    async def kick(
        self,
        room_id: RoomID,
        sender: UserID,
        target: UserID,
        reason: str | None = None,
        origin_server_ts: int | None = None,
    ) -> None:
        # A kick of a banned user would lift the ban: refused, as Synapse does.
        if await self.membership_of(room_id, target) in (None, "leave", "ban"):
            raise MatrixError(Errcode.FORBIDDEN, f"{target} is not in the room")
        await self._change(
            room_id, sender, target, "leave", reason=reason, origin_server_ts=origin_server_ts
        )

    async def ban(
        self,
        room_id: RoomID,
        sender: UserID,
        target: UserID,
        reason: str | None = None,
        origin_server_ts: int | None = None,
    ) -> None:
        await self._change(
            room_id, sender, target, "ban", reason=reason, origin_server_ts=origin_server_ts
        )

    async def unban(
        self,
        room_id: RoomID,
        sender: UserID,
        target: UserID,
        reason: str | None = None,
        origin_server_ts: int | None = None,
    ) -> None:
        if await self.membership_of(room_id, target) != "ban":
            raise MatrixError(Errcode.FORBIDDEN, f"{target} is not banned")
        await self._change(
            room_id, sender, target, "leave", reason=reason, origin_server_ts=origin_server_ts
        )

    async def forget(self, room_id: RoomID, user_id: UserID) -> None:
        """Forget a room the user has left (spec: 400 M_UNKNOWN while still joined)."""
        current = await self.membership_of(room_id, user_id)
        if current in ("join", "invite", "knock"):
            raise MatrixError(Errcode.UNKNOWN, "You must leave the room before forgetting it")
        if current is None:
            raise MatrixError(Errcode.NOT_FOUND, "You were never in this room")
        await self._store.set_forgotten(user_id, room_id, True)
