"""Joining a room that lives on other servers (Server-Server API, "Joining Rooms").

``make_join`` on a resident server gives a template; this server fills it in, signs it and
sends it with ``send_join`` v2, which answers with the room's state before the join and
that state's auth chain. Every event of the answer is checked as on receipt (format,
signatures, content hash, authorization against its own auth events, in topological
order), the state and auth chain are stored as outliers, and the join becomes the room's
first timeline event here: its state is the answered state plus the join.

The join asks for ``omit_members`` (MSC3706 / MSC3902, "faster joins"). An answer with
``members_omitted`` holds the state without most member events: the room is then marked
partial (``partial_state_resync.PartialStateResync.begin``), the join is checked against
its own auth events, events go to the answer's ``servers_in_room``, the user can read and
send at once, and the full state is fetched in the background.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from peyvand.errors import Errcode, MatrixError
from peyvand.events.auth import AuthError, check_auth_events_list, check_auth_rules
from peyvand.events.auth_order import auth_topological_order
from peyvand.events.builder import EventTooLargeError, finalize_pdu
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.received import InvalidPdu, check_content_hash_or_redact, parse_pdu
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from peyvand.events.signing import SigningKey
from peyvand.federation.client import FederationHttpError
from peyvand.federation.transport import FederationTransport
from peyvand.services.federation.errors import join_refusal
from peyvand.services.federation.federation_pdus import supported_room_version
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.storage.events import EventStore
from peyvand.storage.models import EventToPersist, OutlierRow, RoomRow, StateChange
from peyvand.storage.partial_state import PartialStateRoom
from peyvand.types import EventID, JsonDict, RoomID, ServerName, UserID, is_valid_server_name

logger = logging.getLogger(__name__)

CREATE_KEY: StateKey = ("m.room.create", "")
SignatureCheck = Callable[[Sequence[Pdu]], Awaitable[list[bool]]]
_MAX_JOIN_AUTH_FETCH = 10
# servers_in_room kept from a send_join answer (partial state): events go to each.
_MAX_SERVERS_IN_ROOM = 5_000


class PartialJoins(Protocol):
    """Rooms joined with partial state (``PartialStateResync``)."""

    async def begin(self, room: PartialStateRoom) -> None: ...

    async def abandon(self, room_id: RoomID) -> None: ...

    def resync(self, room_id: RoomID) -> None: ...


class RemoteJoiner:
    def __init__(
        self,
        server_name: ServerName,
        signing_key: SigningKey,
        transport: FederationTransport,
        state: StateService,
        store: EventStore,
        check_signatures: SignatureCheck,
        allocate_stream: Callable[[], int],
        persist: Callable[[Sequence[EventToPersist]], Awaitable[None]],
        *,
        partial: PartialJoins | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """With ``partial`` the join asks for ``omit_members`` and may get partial state."""
        self._server_name = server_name
        self._signing_key = signing_key
        self._transport = transport
        self._state = state
        self._store = store
        self._check_signatures = check_signatures
        self._allocate_stream = allocate_stream
        self._persist = persist
        self._partial = partial
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def join(
        self, room_id: RoomID, user_id: UserID, servers: Sequence[ServerName], content: JsonDict
    ) -> None:
        """Join ``room_id`` through the first of ``servers`` that answers."""
        candidates = [s for s in dict.fromkeys(servers) if s != self._server_name]
        if not candidates:
            raise MatrixError(Errcode.NOT_FOUND, "No known servers to join this room through")
        errors = []
        for server in candidates:
            try:
                await self._join_via(server, room_id, user_id, content)
                return
            except MatrixError:
                raise
            except Exception as exc:
                if isinstance(exc, FederationHttpError) and (refused := join_refusal(exc)):
                    raise refused from exc
                logger.info("joining %s via %s failed: %s", room_id, server, exc)
                errors.append(f"{server}: {exc}")
        raise MatrixError(
            Errcode.UNKNOWN, "Failed to join through " + "; ".join(errors), status=502
        )

    async def _join_via(
        self, server: ServerName, room_id: RoomID, user_id: UserID, content: JsonDict
    ) -> None:
        template = await self._transport.make_join(server, room_id, user_id, KNOWN_ROOM_VERSIONS)
        version = self._version(template)
        event = template.get("event")
        if not isinstance(event, dict):
            raise ValueError("make_join gave no event")
        if event.get("room_id") != room_id or event.get("sender") != user_id:
            raise ValueError("make_join gave an event for another room or user")
        event = dict(event)
        template_content = event.get("content")
        authoriser = (
            template_content.get("join_authorised_via_users_server")
            if isinstance(template_content, dict)
            else None
        )
        event["content"] = {**content, "membership": "join"}
        if isinstance(authoriser, str):  # a restricted room: the resident server vouches
            event["content"]["join_authorised_via_users_server"] = authoriser
        event["origin_server_ts"] = int(self._clock() * 1000)
        try:
            join = finalize_pdu(
                event, version, origin_server_name=self._server_name, signing_key=self._signing_key
            )
        except (EventTooLargeError, ValueError) as exc:
            raise ValueError(f"bad join template: {exc}") from exc
        answer = await self._transport.send_join(
            server, room_id, join.event_id, dict(join.data), omit_members=self._partial is not None
        )
        if not isinstance(answer, dict):
            raise ValueError("send_join gave no object")
        signed = answer.get("event")
        if isinstance(signed, dict) and isinstance(signed.get("signatures"), dict):
            # A restricted join comes back signed by the resident server too: keep those
            # signatures (other servers check them), nothing else from the answer.
            data = dict(join.data)
            data["signatures"] = {**signed["signatures"], **dict(join.data["signatures"])}
            join = Pdu(data, join.event_id, version)
        await self._install(server, room_id, version, join, answer)

    @staticmethod
    def _version(template: Any) -> RoomVersion:
        if not isinstance(template, dict):
            raise ValueError("make_join gave no object")
        return supported_room_version(template.get("room_version", "1"))

    async def _install(
        self, server: ServerName, room_id: RoomID, version: RoomVersion, join: Pdu, answer: JsonDict
    ) -> None:
        """Check the answer and make the room exist here, with the join as its first
        timeline event."""
        partial = self._partial_room(server, room_id, join, answer)
        state_raw = answer.get("state")
        chain_raw = answer.get("auth_chain")
        if not isinstance(state_raw, list) or not isinstance(chain_raw, list):
            raise ValueError("send_join gave no state or auth chain")
        events: dict[EventID, Pdu] = {}
        state_ids: set[EventID] = set()
        for is_state, raws in ((False, chain_raw), (True, state_raw)):
            for raw in raws:
                try:
                    pdu = parse_pdu(raw, version, room_id=room_id)
                except InvalidPdu as exc:
                    raise ValueError(f"invalid event in the room state: {exc}") from exc
                events[pdu.event_id] = check_content_hash_or_redact(pdu)[0]
                if is_state:
                    state_ids.add(pdu.event_id)
        valid = await self._check_signatures(list(events.values()))
        bad = [p.event_id for p, ok in zip(events.values(), valid, strict=True) if not ok]
        if bad:
            raise ValueError(f"events with invalid signatures: {bad[:3]}")
        rejected = check_auth_chain(events)
        state: dict[StateKey, EventID] = {}
        for event_id in state_ids:
            pdu = events[event_id]
            if event_id in rejected or not pdu.is_state():
                raise ValueError(f"state event {event_id} is not valid")
            state[pdu.state_tuple] = event_id
        create_id = state.get(CREATE_KEY)
        if create_id is None:
            raise ValueError("the room state has no create event")
        create = events[create_id]
        if create.content.get("room_version", "1") != version.identifier:
            raise ValueError("the create event's room version differs")
        auth_state = {k: events[e] for k, e in state.items()}
        if partial is not None:
            # Members are missing from the state: the join's own auth events stand in for
            # them (a restricted join's authorising member, for one).
            auth_state.update(await self._join_auth_events(server, join, events, rejected))
        try:
            check_auth_rules(join, auth_state)
        except AuthError as exc:
            raise MatrixError(Errcode.FORBIDDEN, f"The join is not allowed: {exc.message}") from exc
        self._store.remember_room_version(room_id, version.identifier)
        await self._store.persist_outliers(
            [
                OutlierRow(p, "rejected" if e in rejected else "outlier", None)
                for e, p in events.items()
                if e != join.event_id
            ]
        )
        before = self._state.root_state_group(room_id, state)
        after = await self._state.child_state_group(before.row, {join.state_tuple: join.event_id})
        current = {**state, join.state_tuple: join.event_id}
        memberships = {
            UserID(k[1]): events[e].membership or "leave"
            for k, e in state.items()
            if k[0] == "m.room.member"
        }
        memberships[UserID(join.state_key or "")] = "join"
        # In the order storage reads them back (every row set at the join's position:
        # by user ID), so the heroes are the same before and after a restart.
        memberships = dict(sorted(memberships.items()))
        rejoining = await self._store.get_room(room_id) is not None  # a room we left
        # Rejoining, what was current when we left and the room no longer has goes; not
        # with partial state, which lacks most members by design (the completion sets
        # what the full state has).
        stale = (
            await self._store.get_current_state_ids(room_id)
            if rejoining and partial is None
            else {}
        )
        changes: tuple[StateChange, ...] = (
            *(
                (k, e, (join if e == join.event_id else events[e]).membership)
                for k, e in current.items()
            ),
            *((k, None, None) for k in stale if k not in current),
        )
        new_room = (
            None
            if rejoining
            else RoomRow(room_id, version.identifier, create.sender, False, self._now_ms())
        )
        snapshot = RoomSnapshot(
            room_id=room_id,
            room_version=version,
            state=current,
            memberships=memberships,
            extremities=[join.event_id],
            depth=join.depth,
            state_group=after.row,
        )
        if partial is not None and self._partial is not None:
            await self._partial.begin(partial)
        self._state.add_room(snapshot)
        try:
            async with snapshot.lock:
                # The position is taken as the join is queued, nothing awaited in between:
                # one left unqueued would hold back every higher position (issue 21).
                persisted = EventToPersist(
                    pdu=join,
                    stream_ordering=self._allocate_stream(),
                    state_group=after.row.state_group,
                    new_state_group=after,
                    txn=None,
                    relates_to=None,
                    rel_type=None,
                    replaces_state=state.get(join.state_tuple),
                    new_extremities=(join.event_id,),
                    new_room=new_room,
                    current_state_group=after.row.state_group,
                    current_state_changes=changes,
                    extra_state_groups=(before,),
                )
                await self._persist([persisted])
        except BaseException:
            self._state.forget_room(room_id)
            if partial is not None and self._partial is not None:
                await self._partial.abandon(room_id)
            raise
        if partial is not None and self._partial is not None:
            logger.info(
                "joined %s with partial state (%d state events, %d servers in the room)",
                room_id,
                len(state),
                len(partial.servers),
            )
            self._partial.resync(room_id)

    def _partial_room(
        self, server: ServerName, room_id: RoomID, join: Pdu, answer: JsonDict
    ) -> PartialStateRoom | None:
        """The partial-state room the answer makes, if it omitted members."""
        if self._partial is None or answer.get("members_omitted") is not True:
            return None
        servers = answer.get("servers_in_room")
        if not isinstance(servers, list):
            raise ValueError("send_join omitted members without servers_in_room")
        return PartialStateRoom(room_id, join.event_id, server, _servers_in_room(servers))

    async def _join_auth_events(
        self,
        server: ServerName,
        join: Pdu,
        events: Mapping[EventID, Pdu],
        rejected: set[EventID],
    ) -> dict[StateKey, Pdu]:
        """The join's auth events, from the answer or (absent there) from ``server``,
        checked like the answer's; ValueError if one cannot be had or was rejected."""
        wanted = [e for e in join.auth_event_ids[:_MAX_JOIN_AUTH_FETCH] if e not in events]
        fetched: dict[EventID, Pdu] = {}
        for event_id in wanted:
            try:
                pdu = parse_pdu(
                    await self._transport.get_event(server, event_id),
                    join.room_version,
                    room_id=join.room_id,
                )
            except InvalidPdu as exc:
                raise ValueError(f"invalid auth event {event_id}: {exc}") from exc
            if pdu.event_id != event_id:
                raise ValueError(f"{server} answered {pdu.event_id} for {event_id}")
            fetched[event_id] = check_content_hash_or_redact(pdu)[0]
        if fetched:
            valid = await self._check_signatures(list(fetched.values()))
            if not all(valid):
                raise ValueError("an auth event of the join has an invalid signature")
            rejected |= check_auth_chain({**events, **fetched}) & fetched.keys()
            await self._store.persist_outliers(
                [
                    OutlierRow(p, "rejected" if e in rejected else "outlier", None)
                    for e, p in fetched.items()
                ]
            )
        found: dict[StateKey, Pdu] = {}
        for event_id in join.auth_event_ids:
            auth_event = events.get(event_id) or fetched.get(event_id)
            if auth_event is None or event_id in rejected:
                raise ValueError(f"the join's auth event {event_id} is not valid")
            found[auth_event.state_tuple] = auth_event
        return found


def check_auth_chain(events: Mapping[EventID, Pdu]) -> set[EventID]:
    """Check every event against its own auth events, auth parents first (a rejection
    reaches every event citing the rejected one); the IDs of the rejected."""
    rejected: set[EventID] = set()
    create = next((e for e in events.values() if e.type == "m.room.create"), None)
    for pdu in auth_topological_order(events):
        auth_events = [events[a] for a in pdu.auth_event_ids if a in events]
        incomplete = len(auth_events) != len(pdu.auth_event_ids)
        if incomplete or any(a in rejected for a in pdu.auth_event_ids):
            rejected.add(pdu.event_id)
            continue
        try:
            check_auth_events_list(pdu, auth_events, create_event=create)
            auth_state = {a.state_tuple: a for a in auth_events}
            if create is not None:
                auth_state[CREATE_KEY] = create
            check_auth_rules(pdu, auth_state)
        except AuthError:
            rejected.add(pdu.event_id)
    return rejected


def _servers_in_room(servers: Sequence[Any]) -> tuple[ServerName, ...]:
    """The send_join answer's ``servers_in_room`` (MSC3706), kept only as far as it can
    be trusted: events sent while the state is partial go to every one of them and each
    may read the room (``RoomAccess.require_server_in_room``), so names not matching the
    server-name grammar (Appendices, "Server Name") are left out, duplicates once, and
    the list is capped at ``_MAX_SERVERS_IN_ROOM`` (what is dropped is logged). Synapse
    trusts the list as given; the resync adds the servers of members seen since."""
    names = [ServerName(s) for s in servers if isinstance(s, str) and is_valid_server_name(s)]
    unique = tuple(dict.fromkeys(names))
    kept = unique[:_MAX_SERVERS_IN_ROOM]
    if len(names) < len(servers) or len(kept) < len(unique):
        logger.warning(
            "servers_in_room: left out %d invalid names and %d beyond the first %d",
            len(servers) - len(names),
            len(unique) - len(kept),
            _MAX_SERVERS_IN_ROOM,
        )
    return kept
