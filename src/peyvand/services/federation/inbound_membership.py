"""Inbound membership handshakes (Server-Server API, "Joining Rooms", "Leaving Rooms
(Rejecting Invites)", "Knocking on rooms"): ``make_join`` / ``send_join`` v2,
``make_leave`` / ``send_leave`` v2 and ``make_knock`` / ``send_knock``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from peyvand.errors import Errcode, MatrixError
from peyvand.events.auth import AuthError, auth_types_for_event, check_auth_rules
from peyvand.events.builder import event_references
from peyvand.events.pdu import Pdu
from peyvand.events.received import (
    InvalidPdu,
    parse_pdu,
)
from peyvand.events.signing import SigningKey, sign_event
from peyvand.events.state_res import StateResError
from peyvand.services.federation.federation_pdus import federation_pdu, stripped_state
from peyvand.services.federation.outbound_events import OutboundEvents
from peyvand.services.federation.partial_state_answer import (
    partial_state_answer,
    servers_before_join,
)
from peyvand.services.federation.received_events import DroppedPdu, FederationEventHandler, Outcome
from peyvand.services.federation.room_access import RoomAccess
from peyvand.services.federation.serving import FederationReads
from peyvand.services.rooms.policy_lists import PolicyListService
from peyvand.services.rooms.restricted_joins import join_authoriser
from peyvand.services.timeline.event_creation import MAX_PREV_EVENTS, cited_hashes
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.types import EventID, JsonDict, RoomID, ServerName, UserID, server_name_of

logger = logging.getLogger(__name__)


class InboundMembership:
    """Servers of users joining, leaving or knocking on a room this server is in: each
    asks for an event template (make_*), signs it and hands it back (send_*); the event is
    checked like any received PDU and, accepted, relayed to the rest of the room."""

    def __init__(
        self,
        server_name: ServerName,
        state: StateService,
        access: RoomAccess,
        reads: FederationReads,
        handler: FederationEventHandler,
        outbound: OutboundEvents,
        signing_key: SigningKey,
        policy_lists: PolicyListService,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Users and rooms the moderation ``policy_lists`` ban are refused."""
        self._server_name = server_name
        self._state = state
        self._access = access
        self._reads = reads
        self._handler = handler
        self._outbound = outbound
        self._signing_key = signing_key
        self._clock = clock
        self._policy_lists = policy_lists

    async def make_join(
        self, origin: ServerName, room_id: RoomID, user_id: UserID, versions: Sequence[str]
    ) -> JsonDict:
        """GET /make_join: a join event template for a user of ``origin``."""
        snapshot = await self._room_to_enter(origin, room_id, user_id, versions)
        version = snapshot.room_version
        content: JsonDict = {"membership": "join"}
        authoriser = await join_authoriser(self._state, snapshot, user_id, self._server_name)
        if authoriser is not None:
            content["join_authorised_via_users_server"] = authoriser
        template = await self._template(snapshot, user_id, "m.room.member", user_id, content)
        await self._check_template(snapshot, template)
        return {"event": template, "room_version": version.identifier}

    async def send_join(
        self,
        origin: ServerName,
        room_id: RoomID,
        event_id: EventID,
        raw: Any,
        *,
        omit_members: bool = False,
    ) -> JsonDict:
        """PUT /send_join v2: accept the signed join, relay it, answer with the room's
        state before it and that state's auth chain; with ``omit_members`` (MSC3706)
        without most member events (``partial_state_answer``)."""
        snapshot = await self._access.room(room_id, origin, resident=True)
        pdu = self._parse_membership(raw, snapshot, event_id, origin, "join")
        await self._check_join(room_id, pdu.sender)
        via = pdu.content.get("join_authorised_via_users_server")
        if isinstance(via, str) and server_name_of(via) == self._server_name:
            # A restricted join one of our users vouches for: our server signs it too
            # (the auth rules require it), and the joining server gets it back signed.
            signed = sign_event(pdu.data, pdu.room_version, self._server_name, self._signing_key)
            pdu = Pdu(dict(signed), pdu.event_id, pdu.room_version)
        outcome = await self._process_relayed(origin, pdu)
        if outcome.status not in ("accepted", "duplicate"):
            raise MatrixError(Errcode.FORBIDDEN, outcome.reason or "The join was not allowed")
        if omit_members:
            state_events, chain = await partial_state_answer(
                self._reads, self._state, pdu, snapshot.memberships
            )
        else:
            state_events, chain = await self._reads.state_with_auth_chain(pdu.room_id, pdu.event_id)
        return {
            "origin": self._server_name,
            "event": federation_pdu(pdu),
            "state": [federation_pdu(p) for p in state_events.values()],
            "auth_chain": [federation_pdu(p) for p in chain.values()],
            "members_omitted": omit_members,
            "servers_in_room": servers_before_join(snapshot.memberships, pdu.sender),
        }

    async def make_leave(self, origin: ServerName, room_id: RoomID, user_id: UserID) -> JsonDict:
        """GET /make_leave: a leave template (a remote user rejecting our invite)."""
        snapshot = await self._room_for_user(origin, room_id, user_id)
        template = await self._template(
            snapshot, user_id, "m.room.member", user_id, {"membership": "leave"}
        )
        await self._check_template(snapshot, template)
        return {"event": template, "room_version": snapshot.room_version.identifier}

    async def send_leave(
        self, origin: ServerName, room_id: RoomID, event_id: EventID, raw: Any
    ) -> JsonDict:
        """PUT /send_leave v2: accept the signed leave and relay it to the room."""
        snapshot = await self._access.room(room_id, origin, resident=True)
        pdu = self._parse_membership(raw, snapshot, event_id, origin, "leave")
        outcome = await self._process_relayed(origin, pdu)
        if outcome.status not in ("accepted", "duplicate"):
            raise MatrixError(Errcode.FORBIDDEN, outcome.reason or "The leave was not allowed")
        return {}

    async def make_knock(
        self, origin: ServerName, room_id: RoomID, user_id: UserID, versions: Sequence[str]
    ) -> JsonDict:
        """GET /make_knock: a knock template for a user of ``origin``."""
        snapshot = await self._room_to_enter(origin, room_id, user_id, versions)
        version = snapshot.room_version
        template = await self._template(
            snapshot, user_id, "m.room.member", user_id, {"membership": "knock"}
        )
        await self._check_template(snapshot, template)
        return {"event": template, "room_version": version.identifier}

    async def send_knock(
        self, origin: ServerName, room_id: RoomID, event_id: EventID, raw: Any
    ) -> JsonDict:
        """PUT /send_knock: accept the signed knock, relay it, answer with the room's
        stripped state."""
        snapshot = await self._access.room(room_id, origin, resident=True)
        pdu = self._parse_membership(raw, snapshot, event_id, origin, "knock")
        await self._check_join(room_id, pdu.sender)
        outcome = await self._process_relayed(origin, pdu)
        if outcome.status not in ("accepted", "duplicate"):
            raise MatrixError(Errcode.FORBIDDEN, outcome.reason or "The knock was not allowed")
        return {"knock_room_state": await stripped_state(self._state, snapshot)}

    async def _room_for_user(
        self, origin: ServerName, room_id: RoomID, user_id: UserID
    ) -> RoomSnapshot:
        """The room, for a template for ``user_id``: this server takes part in it, the
        room lets ``origin`` in, and the user is one of ``origin``'s."""
        snapshot = await self._access.room(room_id, origin, resident=True)
        if server_name_of(user_id) != origin:
            raise MatrixError(Errcode.FORBIDDEN, "The user is not on the requesting server")
        return snapshot

    async def _room_to_enter(
        self, origin: ServerName, room_id: RoomID, user_id: UserID, versions: Sequence[str]
    ) -> RoomSnapshot:
        """The room, for a join or knock template: as ``_room_for_user``, and the policy
        lists ban neither the user nor the room, and ``origin`` supports its version."""
        snapshot = await self._room_for_user(origin, room_id, user_id)
        await self._check_join(room_id, user_id)
        version = snapshot.room_version
        if version.identifier not in versions:
            raise MatrixError(
                Errcode.INCOMPATIBLE_ROOM_VERSION,
                f"This room is version {version.identifier}",
                room_version=version.identifier,
            )
        return snapshot

    async def _template(
        self,
        snapshot: RoomSnapshot,
        sender: UserID,
        event_type: str,
        state_key: str,
        content: JsonDict,
    ) -> JsonDict:
        version = snapshot.room_version
        wanted = auth_types_for_event(version, event_type, sender, state_key, content)
        prev_events = snapshot.extremities[-MAX_PREV_EVENTS:]
        auth_events = sorted(snapshot.state[k] for k in wanted if k in snapshot.state)
        hashes = await cited_hashes(self._state, version, [*prev_events, *auth_events])
        return {
            "type": event_type,
            "state_key": state_key,
            "sender": sender,
            "room_id": snapshot.room_id,
            "content": content,
            "origin_server_ts": int(self._clock() * 1000),
            "depth": snapshot.depth + 1,
            "prev_events": event_references(version, prev_events, hashes),
            "auth_events": event_references(version, auth_events, hashes),
        }

    async def _check_template(self, snapshot: RoomSnapshot, template: JsonDict) -> None:
        """Would this membership be allowed now? (403 early, as Synapse answers.)"""
        # The joining server signs later; a restricted join is also signed by this
        # server (send_join), so the check assumes this server's signature.
        probe_data = {**template, "signatures": {self._server_name: {}}}
        probe = Pdu(probe_data, EventID("$probe"), snapshot.room_version)
        keys = auth_types_for_event(
            probe.room_version, probe.type, probe.sender, probe.state_key, probe.content
        )
        keys.add(("m.room.create", ""))
        auth_state = await self._state.get_state_events(snapshot.state, keys)
        try:
            check_auth_rules(probe, auth_state)
        except AuthError as exc:
            raise MatrixError(Errcode.FORBIDDEN, exc.message) from exc

    async def _check_join(self, room_id: RoomID, user_id: UserID) -> None:
        """403 if the moderation policy lists ban the user or the room."""
        await self._policy_lists.check_join(room_id, user_id)

    def _parse_membership(
        self,
        raw: Any,
        snapshot: RoomSnapshot,
        event_id: EventID,
        origin: ServerName,
        membership: str,
    ) -> Pdu:
        try:
            pdu = parse_pdu(raw, snapshot.room_version, room_id=snapshot.room_id)
        except InvalidPdu as exc:
            raise MatrixError(Errcode.BAD_JSON, str(exc)) from exc
        if pdu.event_id != event_id:
            raise MatrixError(Errcode.BAD_JSON, "The event ID does not match the URL")
        if pdu.type != "m.room.member" or pdu.membership != membership:
            raise MatrixError(Errcode.BAD_JSON, f"Not a {membership} event")
        if pdu.state_key != pdu.sender or server_name_of(pdu.sender) != origin:
            raise MatrixError(Errcode.FORBIDDEN, "The event is not from the requesting server")
        return pdu

    async def _process_relayed(self, origin: ServerName, pdu: Pdu) -> Outcome:
        """Process a membership event a server handed us to relay to the rest of the room
        (send_join, send_leave); 403 when it cannot be processed."""
        # Relayed by the pre-commit hook if it is accepted.
        with self._outbound.relaying(pdu.event_id, origin):
            try:
                return await self._handler.process_pdu(origin, pdu)
            except DroppedPdu as exc:
                raise MatrixError(Errcode.FORBIDDEN, str(exc)) from exc
            except StateResError as exc:
                raise MatrixError(Errcode.UNKNOWN, f"State resolution failed: {exc}") from exc
