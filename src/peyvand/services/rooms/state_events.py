"""State events sent by clients: PUT /rooms/{roomId}/state/{eventType}/{stateKey}
(Client-Server API, "Sending events to a room").

What the state endpoint adds to event creation, as Synapse does:

- ``m.room.member`` goes through the membership service, the content's ``membership``
  choosing the action and its other keys kept (a per-room ``displayname``);
- ``m.room.canonical_alias`` has its new aliases checked (``services.canonical_alias``);
- state identical to the current state (same sender, same content) sends nothing new:
  the answer is the current event's ID (checked under the room's lock, in
  ``EventCreationService.send``).
"""

from __future__ import annotations

from peyvand.errors import Errcode, MatrixError
from peyvand.services.rooms.canonical_alias import AliasLookup, check_canonical_alias
from peyvand.services.rooms.membership import MembershipService
from peyvand.services.timeline.event_creation import EventCreationService, EventSpec
from peyvand.services.timeline.room_state import StateService
from peyvand.types import EventID, JsonDict, RoomID, UserID

MEMBER = "m.room.member"
CANONICAL_ALIAS = "m.room.canonical_alias"


class StateEventService:
    def __init__(
        self,
        events: EventCreationService,
        state: StateService,
        membership: MembershipService,
        alias_lookup: AliasLookup,
    ) -> None:
        self._events = events
        self._state = state
        self._membership = membership
        self._alias_lookup = alias_lookup

    async def put_state(self, room_id: RoomID, sender: UserID, spec: EventSpec) -> EventID:
        """Send one state event for a client; the ID of the event now in the state."""
        if spec.state_key is None:
            raise MatrixError(Errcode.INVALID_PARAM, "A state event needs a state key")
        if spec.event_type == MEMBER:
            return await self._put_member(room_id, sender, UserID(spec.state_key), spec)
        if spec.event_type == CANONICAL_ALIAS and spec.state_key == "":
            snapshot = await self._state.get_room(room_id)
            current_id = None if snapshot is None else snapshot.state.get((CANONICAL_ALIAS, ""))
            current = None if current_id is None else await self._state.get_event(current_id)
            previous = {} if current is None else current.pdu.content
            await check_canonical_alias(self._alias_lookup, room_id, spec.content, previous)
        event = await self._events.send(room_id, sender, spec, unless_identical=True)
        return event.pdu.event_id

    async def _put_member(
        self, room_id: RoomID, sender: UserID, target: UserID, spec: EventSpec
    ) -> EventID:
        """``m.room.member`` through the state endpoint, as Synapse's ``update_membership``:
        ``join`` and ``knock`` only for oneself, ``leave`` of another user is a kick (an
        unban if they are banned). An appservice's ``?ts=`` (``spec.origin_server_ts``)
        dates the member event as it dates any other."""
        content, ts = spec.content, spec.origin_server_ts
        membership = content.get("membership")
        if not isinstance(membership, str):
            raise MatrixError(Errcode.BAD_JSON, "'membership' must be a string")
        reason = content.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise MatrixError(Errcode.BAD_JSON, "'reason' must be a string")
        extra: JsonDict = {k: v for k, v in content.items() if k not in ("membership", "reason")}
        own = sender == target
        if membership in ("join", "knock") and not own:
            raise MatrixError(
                Errcode.FORBIDDEN, f"You cannot {membership} on behalf of another user"
            )
        if membership == "join":
            await self._membership.join(
                room_id, target, reason, content=extra or None, origin_server_ts=ts
            )
        elif membership == "knock":
            await self._membership.knock(room_id, target, reason, origin_server_ts=ts)
        elif membership == "leave" and own:
            await self._membership.leave(room_id, target, reason, origin_server_ts=ts)
        elif membership == "leave":
            if await self._membership.membership_of(room_id, target) == "ban":
                await self._membership.unban(room_id, sender, target, reason, origin_server_ts=ts)
            else:
                await self._membership.kick(room_id, sender, target, reason, origin_server_ts=ts)
        elif membership == "invite":
            await self._membership.invite(room_id, sender, target, reason, origin_server_ts=ts)
        elif membership == "ban":
            await self._membership.ban(room_id, sender, target, reason, origin_server_ts=ts)
        else:
            raise MatrixError(Errcode.INVALID_PARAM, f"Unknown membership: {membership}")
        snapshot = await self._state.get_room(room_id)
        event_id = None if snapshot is None else snapshot.state.get((MEMBER, target))
        if event_id is None:
            raise MatrixError(Errcode.NOT_FOUND, "The membership event is not known here")
        return event_id
