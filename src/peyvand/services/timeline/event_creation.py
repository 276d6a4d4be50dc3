"""Creating local events (DESIGN.md, "Writing events").

Under the room's lock: pick ``prev_events`` (the forward extremities), ``auth_events``
(from the cached current state), ``depth``; build, hash and sign the PDU; check the auth
rules; allocate its stream position and state group; update the in-memory room snapshot
and enqueue it for group commit.

The room's current state is always the resolution of the states after its forward
extremities, so an event over all of them has the current state before it. When there
are more extremities than ``MAX_PREV_EVENTS``, the state before the event is the
resolution of the states after the ones it cites, and the room's new current state that
of the states after the extremities left (the event among them), as on receipt
(``services.state_resolution``). The lock is released before the commit is awaited, so
later events of the same room can join the same commit.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from peyvand.errors import Errcode, MatrixError, ProcessUnreachable
from peyvand.events.auth import AuthError, auth_types_for_event, check_auth_rules
from peyvand.events.builder import EventTooLargeError, build_pdu
from peyvand.events.canonical_json import encode_canonical_json
from peyvand.events.hashes import reference_hashes
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.redaction import has_redact_power
from peyvand.events.relations import relation_columns
from peyvand.events.room_versions import RoomVersion
from peyvand.events.signing import SigningKey
from peyvand.services.timeline.event_writer import EventWriter
from peyvand.services.timeline.room_owners import RoomOwners
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.services.timeline.state_resolution import StateResolver
from peyvand.services.timeline.stream_tracker import EventPositions
from peyvand.storage.events import EventStore
from peyvand.storage.models import (
    EventToPersist,
    NewStateGroup,
    RoomRow,
    StoredEvent,
    stored_event,
)
from peyvand.storage.room_writers import NotHolder
from peyvand.storage.stream_positions import StoodIn
from peyvand.types import EventID, JsonDict, RoomID, ServerName, UserID

if TYPE_CHECKING:
    from peyvand.services.timeline.forwarding import ForwardedWrites

CREATE_KEY: StateKey = ("m.room.create", "")
_JOIN_RULES: StateKey = ("m.room.join_rules", "")
_CALL_INVITE = "m.call.invite"
# Never redacted by local users (as Synapse): the room's own definition, and the server
# ACL, whose redacted form (no ``allow``) denies every server.
_NEVER_REDACTED = frozenset({"m.room.create", "m.room.server_acl"})
# prev_events of new events: the newest forward extremities, at most this many (others'
# events can leave many; receivers refuse more than 20).
MAX_PREV_EVENTS = 10
# Create events signed, at most, to find a room ID (free, and this writer's).
_ROOM_ID_TRIES = 1000

TxnKey = tuple[str, str, str]
Countersign = Callable[[Pdu, RoomSnapshot], Awaitable[Pdu]]


def scoped_txn_id(room_id: str, event_type: str, txn_id: str, redacts: str | None = None) -> str:
    """The stored key of a client's transaction ID (the third part of a ``TxnKey``).

    Client-Server API "Transaction identifiers": a retransmission has the same txnId *and
    the same request path*, so the room and the event type (or, for /redact, the redacted
    event) are part of the key; ``unsigned.transaction_id`` gives back only ``txn_id``.
    """
    path = f"redact/{redacts}" if redacts is not None else f"send/{event_type}"
    return f"{room_id}/{path}/{txn_id}"


def client_txn_id(stored: str, room_id: str, event_type: str, redacts: str | None) -> str:
    """The client's own txnId from a key made by ``scoped_txn_id`` for this event."""
    for candidate in (redacts, None):
        prefix = scoped_txn_id(room_id, event_type, "", candidate)
        if stored.startswith(prefix):
            return stored[len(prefix) :]
    return stored


async def cited_hashes(
    state: StateService, version: RoomVersion, event_ids: Sequence[EventID]
) -> JsonDict | None:
    """Rooms v1/v2: the reference hashes of the events a new event cites, which its
    ``[event_id, hashes]`` pairs carry (``pdu_v1.yaml``), read in one go (a room's recent
    and state events are cached). None in later versions, which cite IDs only."""
    if not version.event_id_carried:
        return None
    pdus = await state.get_pdus(event_ids)
    return reference_hashes((pdu.data for pdu in pdus.values()), version)


@dataclass(frozen=True, slots=True)
class EventSpec:
    """An event a client or service asks to send."""

    event_type: str
    content: Mapping[str, Any]
    state_key: str | None = None
    redacts: EventID | None = None
    # Set by an application service's ``?ts=`` (Application Service API, "Timestamp
    # massaging"); None: now. It does not change the event's place in the DAG.
    origin_server_ts: int | None = None


async def _committed(done: asyncio.Future[None]) -> None:
    """Wait for a local event's commit (left to finish if the caller is cancelled). One
    refused because another event writer took this one's rooms or position over
    (several writers: ``absent_writers``, ``room_holders``) is a 503 to retry: the room's
    writer now takes the retry."""
    try:
        await asyncio.shield(done)
    except (NotHolder, StoodIn) as exc:
        raise MatrixError(Errcode.UNKNOWN, f"The event was not stored ({exc})", status=503) from exc


def _redacts(spec: EventSpec) -> EventID | None:
    """The event an ``m.room.redaction`` redacts: ``spec.redacts`` (``/redact``), else a
    ``redacts`` string in the content (``/send``, where rooms v11+ keep it); the builder
    puts it where the room version wants it (top level before v11)."""
    if spec.redacts is not None or spec.event_type != "m.room.redaction":
        return spec.redacts
    target = spec.content.get("redacts")
    return EventID(target) if isinstance(target, str) else None


RelationCheck = Callable[[RoomID, UserID, str, Mapping[str, Any]], Awaitable[None]]
"""(room, sender, event type, content) -> None, or the error refusing its relation."""


class EventCreationService:
    def __init__(
        self,
        server_name: ServerName,
        signing_key: SigningKey,
        store: EventStore,
        state: StateService,
        writer: EventWriter,
        *,
        positions: EventPositions,
        check_relation: RelationCheck | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Events are committed by ``writer`` (group commit); their stream positions are
        allocated from ``positions``, which the writer's dispatcher finishes (so every
        position taken must be enqueued, or abandoned with ``abandon_stream``);
        ``check_relation`` refuses a relation that may not be sent
        (``services.timeline.relation_checks``)."""
        self._check_relation = check_relation
        self._server_name = server_name
        self._signing_key = signing_key
        self._store = store
        self._state = state
        self._resolver = StateResolver(state)
        self._clock = clock
        self._writer = writer
        self._positions = positions
        self._next_backfill_stream = -1
        self._pending_txns: dict[TxnKey, asyncio.Future[EventID]] = {}
        self._uncommitted: dict[EventID, asyncio.Future[None]] = {}
        # Why this process stores no events (a deployment's process without the
        # ``event_writer`` role), or None; with several processes, who stores them
        # instead and which rooms' events this process creates itself (one of several
        # event writers: ``RoomOwners``; none without the role).
        self._refused: str | None = None
        self._forwarded: ForwardedWrites | None = None
        self._owners: RoomOwners | None = None
        self._instance: str | None = None
        # The next writer asked to create a room whose ID is its create event's hash.
        self._turn = 0

    def forward_writes(self, forwarded: ForwardedWrites, owners: RoomOwners, reason: str) -> None:
        """Store no event from now on (issue 21: only the deployment's event writers
        allocate positions): ``send`` and ``create_room`` are done by the room's writer
        (``owners``) through ``forwarded``; what needs this process (
        events received over federation) is refused with a 503 and ``reason``."""
        self._refused = reason
        self._forwarded = forwarded
        self._owners = owners

    def share_rooms(self, forwarded: ForwardedWrites, owners: RoomOwners, instance: str) -> None:
        """One of several event writers (``instance``): ``send`` to a room another writer
        owns is done by it through ``forwarded``, and this writer creates only rooms it
        owns (``create_room``)."""
        self._forwarded = forwarded
        self._owners = owners
        self._instance = instance

    def _writes_here(self, room_id: RoomID) -> bool:
        owners = self._owners
        return owners is None or owners.owner(room_id) == self._instance

    def new_room_id(self, beside: RoomID | None = None) -> RoomID:
        """A random room ID of this server (room versions whose ID is not the create
        event's hash); in a deployment of several event writers, one of the same
        writer as ``beside`` (a room upgrade's old room: its tombstone and the new
        room's creation then go to one writer)."""
        while True:
            room_id = RoomID(f"!{secrets.token_urlsafe(18)}:{self._server_name}")
            owners = self._owners
            if beside is None or owners is None or owners.shard(room_id) == owners.shard(beside):
                return room_id

    def _room_creator(self, room_id: RoomID | None) -> str | None:
        """The writer that creates a room (None: this process): the one owning
        ``room_id``, or, for an ID to come from the create event's hash, each writer in
        turn (which then makes one it owns)."""
        owners = self._owners
        if owners is None:
            return None
        if room_id is not None:
            owner = owners.owner(room_id)
        else:
            owner = owners.holder(owners.writers[self._turn % len(owners.writers)])
            self._turn += 1
        return None if owner == self._instance else owner

    async def start(self) -> None:
        """Continue the stream positions after the stored events."""
        self._positions.start_after(await self._store.get_max_stream_ordering())
        lowest = min(await self._store.get_min_stream_ordering(), 0)
        self._next_backfill_stream = self._positions.lane.first_below(lowest)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- public API --------------------------------------------------------------------

    async def send(
        self,
        room_id: RoomID,
        sender: UserID,
        spec: EventSpec,
        *,
        txn: TxnKey | None = None,
        countersign: Countersign | None = None,
        unless_identical: bool = False,
        forwarded: bool = False,
    ) -> StoredEvent:
        """Create, authorise and durably store one event; return it once committed.

        ``countersign`` (an invite of a remote user) gets the built event and returns it
        signed by another server, which is what is stored; the room stays locked meanwhile.

        With ``unless_identical`` a state event identical to the one in the state before
        it (same sender, same content) is not sent: that event is returned (once it is
        committed), as Synapse's ``deduplicate_state_event``. The check is made under the
        room's lock, so simultaneous identical requests create one event.

        With ``txn`` a repeated request returns the first event, also while the first is
        still in flight. Once enqueued, the event is committed even if the request is
        cancelled (the client went away), and a retry then gets that event.

        In a deployment, a room whose events another process creates is sent there
        (``forward_writes``, ``share_rooms``); ``forwarded``: this call came so from
        another process, and is refused (503) rather than sent on again.
        """
        if self._forwarded is not None and not self._writes_here(room_id):
            if forwarded:
                raise MatrixError(
                    Errcode.UNKNOWN, f"{room_id}'s events are not created here", status=503
                )
            # The writer has the invite countersigned by the invitee's server itself.
            return await self._forwarded.send(
                room_id,
                sender,
                spec,
                txn=txn,
                unless_identical=unless_identical,
                countersign=countersign is not None,
            )
        future: asyncio.Future[EventID] | None = None
        if txn is not None:
            pending = self._pending_txns.get(txn)
            if pending is not None:
                return await self._event(await asyncio.shield(pending))
            # Registered before the first await: a concurrent retry waits on this one.
            future = asyncio.get_running_loop().create_future()
            self._pending_txns[txn] = future
        try:
            found = await self._store.get_txn_event_id(*txn) if txn is not None else None
            if found is not None:
                self._settle(txn, future, found)
                return await self._event(found)
            if self._check_relation is not None:
                await self._check_relation(room_id, sender, spec.event_type, spec.content)
            while True:
                snapshot = await self._reload(room_id)
                async with snapshot.lock:
                    if self._state.is_forgotten(snapshot):
                        continue  # a failed commit dropped it; build on the reloaded one
                    before = await self._state_before(snapshot)
                    identical = (
                        await self._identical_state(
                            snapshot.state if before is None else before, sender, spec
                        )
                        if unless_identical
                        else None
                    )
                    if identical is not None:
                        break
                    pdu = await self._build(snapshot, sender, spec, before)
                    by_power = await self._authorise(snapshot, pdu, before)
                    if countersign is not None:
                        pdu = await countersign(pdu, snapshot)
                    if before is None:
                        persisted = await self._apply(
                            snapshot, pdu, txn=txn, redaction_by_power=by_power
                        )
                    else:
                        persisted = await self._apply_over_fork(
                            snapshot, pdu, before, txn=txn, redaction_by_power=by_power
                        )
                    if self._state.is_forgotten(snapshot):
                        # A failed commit dropped it while this event was built: its
                        # prev_events may never be stored. Build again on the reloaded one.
                        self._state.forget_events([pdu.event_id], stored=False)
                        self.abandon_stream(persisted.stream_ordering)
                        continue
                    done = self._enqueue([persisted])
                    break
        except BaseException as exc:
            self._settle(txn, future, exc)
            raise
        if identical is not None:
            self._settle(txn, future, identical.pdu.event_id)
            uncommitted = self._uncommitted.get(identical.pdu.event_id)
            if uncommitted is not None:
                await asyncio.shield(uncommitted)
            return identical
        if txn is not None:
            event_id = pdu.event_id

            def committed(result: asyncio.Future[None]) -> None:
                outcome: EventID | BaseException = event_id
                if result.cancelled():
                    outcome = asyncio.CancelledError()
                elif (error := result.exception()) is not None:
                    outcome = error
                self._settle(txn, future, outcome)

            done.add_done_callback(committed)
        await _committed(done)
        return stored_event(persisted)

    def _settle(
        self,
        txn: TxnKey | None,
        future: asyncio.Future[EventID] | None,
        outcome: EventID | BaseException,
    ) -> None:
        """Resolve a pending transaction for the requests waiting on it."""
        if txn is None or future is None:
            return
        if self._pending_txns.get(txn) is future:
            del self._pending_txns[txn]
        if future.done():
            return
        if isinstance(outcome, asyncio.CancelledError):
            future.cancel()
        elif isinstance(outcome, BaseException):
            future.set_exception(outcome)
            future.exception()  # retrieved: waiters re-raise it themselves
        else:
            future.set_result(outcome)

    async def _identical_state(
        self, state: Mapping[StateKey, EventID], sender: UserID, spec: EventSpec
    ) -> StoredEvent | None:
        """The event of ``state`` that a state event ``spec`` from ``sender`` would
        repeat: same key, sender and content (as canonical JSON: 1 and 1.0, or true and
        1, differ). None for a change, or for an event that is not state. None too when
        the current event is redacted: clients see its redacted content, not the stored
        original, so the same content again is a change for them."""
        if spec.state_key is None:
            return None
        current_id = state.get((spec.event_type, spec.state_key))
        current = None if current_id is None else await self._state.get_event(current_id)
        if (
            current is None
            or current.redacted_by is not None
            or current.pdu.sender != sender
            or encode_canonical_json(current.pdu.content) != encode_canonical_json(spec.content)
        ):
            return None
        return current

    async def _event(self, event_id: EventID) -> StoredEvent:
        event = await self._state.get_event(event_id)
        if event is None:
            raise MatrixError(Errcode.UNKNOWN, "Transaction event missing")
        return event

    async def create_room(
        self,
        room_version: RoomVersion,
        creator: UserID,
        create_content: Mapping[str, Any],
        initial: Sequence[EventSpec],
        *,
        room_id: RoomID | None,
        is_public: bool,
        forwarded: bool = False,
    ) -> tuple[RoomID, list[StoredEvent]]:
        """Create a room: its m.room.create and ``initial`` events, in one group commit.

        ``room_id`` is None for versions whose room ID is the create event's hash. In a
        deployment the room's writer creates it (``forward_writes``, ``share_rooms``);
        ``forwarded``: this call came so from another process (made here, never sent on).
        """
        if self._forwarded is not None and not forwarded:
            for _ in range(len(self._owners.writers) if self._owners is not None else 1):
                writer = self._room_creator(room_id)
                if writer is None:
                    break
                try:
                    return await self._forwarded.create_room(
                        writer, room_version, creator, create_content, initial,
                        room_id=room_id, is_public=is_public,
                    )  # fmt: skip
                except ProcessUnreachable:
                    # A writer that is down: a room yet to be named is another's to make.
                    if room_id is not None:
                        raise
            else:
                raise ProcessUnreachable
        if self._refused is not None or (room_id is not None and not self._writes_here(room_id)):
            raise MatrixError(Errcode.UNKNOWN, "The room is not created here", status=503)
        now = self._now_ms()
        create = self._sign(
            room_version,
            room_id,
            creator,
            EventSpec("m.room.create", create_content, ""),
            prev_events=[],
            auth_events=[],
            depth=1,
            origin_server_ts=now,
        )
        # Two identical create events (same creator, content and millisecond) would hash
        # to the same v12 room ID: move the later one on by a millisecond. Nothing awaits
        # between here and add_room below, so the check cannot race. One of several event
        # writers moves it on until the hash is one of its own rooms (as many tries as
        # there are writers, on average).
        for _ in range(_ROOM_ID_TRIES):
            if self._state.cached_room(create.room_id) is None and self._writes_here(
                create.room_id
            ):
                break
            now += 1
            create = self._sign(
                room_version,
                room_id,
                creator,
                EventSpec("m.room.create", create_content, ""),
                prev_events=[],
                auth_events=[],
                depth=1,
                origin_server_ts=now,
            )
        else:
            raise MatrixError(Errcode.UNKNOWN, "No free room ID was found", status=500)
        room_id = create.room_id
        try:
            check_auth_rules(create, {})
        except AuthError as exc:
            raise MatrixError(Errcode.BAD_JSON, f"Invalid room creation: {exc.message}") from exc
        first = self._state.root_state_group(room_id, {CREATE_KEY: create.event_id})
        snapshot = RoomSnapshot(
            room_id=room_id,
            room_version=room_version,
            state={CREATE_KEY: create.event_id},
            memberships={},
            extremities=[create.event_id],
            depth=1,
            state_group=first.row,
        )
        to_persist = [
            self._allocate(
                create,
                first,
                txn=None,
                extremities=(create.event_id,),
                new_room=RoomRow(room_id, room_version.identifier, creator, is_public, now),
            )
        ]
        self._state.cache_events([stored_event(to_persist[0])])
        self._state.add_room(snapshot)
        try:
            async with snapshot.lock:
                for spec in initial:
                    pdu = await self._build(snapshot, creator, spec)
                    by_power = await self._authorise(snapshot, pdu)
                    to_persist.append(
                        await self._apply(snapshot, pdu, txn=None, redaction_by_power=by_power)
                    )
                done = self._enqueue(to_persist)
        except BaseException:
            # Nothing was enqueued: the room does not exist.
            self._state.forget_room(room_id)
            for persisted in to_persist:
                self.abandon_stream(persisted.stream_ordering)
            raise
        # A cancelled request leaves the commit to finish (and be held in flight) as sends do.
        await _committed(done)
        return room_id, [stored_event(p) for p in to_persist]

    # -- building ----------------------------------------------------------------------

    def _sign(
        self,
        room_version: RoomVersion,
        room_id: RoomID | None,
        sender: UserID,
        spec: EventSpec,
        *,
        prev_events: Sequence[EventID],
        auth_events: Sequence[EventID],
        depth: int,
        origin_server_ts: int | None = None,
        cited_hashes: JsonDict | None = None,
    ) -> Pdu:
        try:
            return build_pdu(
                room_version,
                room_id=room_id,
                event_type=spec.event_type,
                sender=sender,
                content=spec.content,
                state_key=spec.state_key,
                prev_events=prev_events,
                auth_events=auth_events,
                depth=depth,
                origin_server_ts=self._now_ms() if origin_server_ts is None else origin_server_ts,
                redacts=_redacts(spec),
                origin_server_name=self._server_name,
                signing_key=self._signing_key,
                cited_hashes=cited_hashes,
            )
        except EventTooLargeError as exc:
            raise MatrixError(Errcode.TOO_LARGE, str(exc)) from exc
        except ValueError as exc:
            raise MatrixError(Errcode.BAD_JSON, str(exc)) from exc

    async def _state_before(self, snapshot: RoomSnapshot) -> dict[StateKey, EventID] | None:
        """The state before a new event when it cannot cite every forward extremity:
        the resolution of the states after those it cites. None: the current state."""
        if len(snapshot.extremities) <= MAX_PREV_EVENTS:
            return None
        return await self._resolver.resolve_extremities(
            snapshot.room_version, snapshot.extremities[-MAX_PREV_EVENTS:], {}
        )

    async def _build(
        self,
        snapshot: RoomSnapshot,
        sender: UserID,
        spec: EventSpec,
        before: Mapping[StateKey, EventID] | None = None,
    ) -> Pdu:
        version = snapshot.room_version
        state = snapshot.state if before is None else before
        wanted = auth_types_for_event(
            version, spec.event_type, sender, spec.state_key, spec.content
        )
        auth_events = sorted(state[k] for k in wanted if k in state)
        prev_events = snapshot.extremities[-MAX_PREV_EVENTS:]
        return self._sign(
            version,
            snapshot.room_id,
            sender,
            spec,
            prev_events=prev_events,
            auth_events=auth_events,
            depth=snapshot.depth + 1,
            origin_server_ts=spec.origin_server_ts,
            cited_hashes=await cited_hashes(self._state, version, [*prev_events, *auth_events]),
        )

    async def _authorise(
        self,
        snapshot: RoomSnapshot,
        pdu: Pdu,
        before: Mapping[StateKey, EventID] | None = None,
    ) -> bool:
        """Check ``pdu`` against the auth rules in the room's current state (and in the
        state before it, when that differs) and, for a redaction, who may redact what
        (``_check_redaction``). Every local event comes here, whatever asked for it.
        Returns whether ``pdu`` is a redaction by power."""
        keys = auth_types_for_event(
            pdu.room_version, pdu.type, pdu.sender, pdu.state_key, pdu.content
        )
        keys.add(CREATE_KEY)
        auth_state = await self._state.get_state_events(snapshot.state, keys)
        states = [auth_state]
        if before is not None:
            states.append(await self._state.get_state_events(before, keys))
        try:
            for state in states:
                check_auth_rules(pdu, state)
        except AuthError as exc:
            raise MatrixError(Errcode.FORBIDDEN, exc.message) from exc
        if pdu.type == _CALL_INVITE:
            await self._check_call_invite(snapshot)
        by_power = [await self._check_redaction(pdu, state) for state in states]
        return all(by_power)

    async def _check_call_invite(self, snapshot: RoomSnapshot) -> None:
        """A call invite rings every member's devices ("Voice over IP"): refused in a
        public room, which anyone may join, as Synapse refuses it."""
        rules = await self._state.get_state_events(snapshot.state, [_JOIN_RULES])
        join_rules = rules.get(_JOIN_RULES)
        if join_rules is not None and join_rules.content.get("join_rule") == "public":
            raise MatrixError(Errcode.FORBIDDEN, "Call invites are not allowed in public rooms")

    async def _check_redaction(self, pdu: Pdu, auth_state: Mapping[StateKey, Pdu]) -> bool:
        """Who may redact what (Client-Server API, "Redactions"; rooms v3+, "Handling
        redactions"); whether the sender of the redaction ``pdu`` has the redact level.

        The auth rules accept any redaction from a member allowed to send one; a local
        user may redact only an event known here (404) of the same room (400), never the
        room's ``m.room.create`` or ``m.room.server_acl`` (403; a redacted ACL would deny
        every server), and another user's event only with the room's redact level (403).
        Other events pass (False).
        """
        if pdu.type != "m.room.redaction":
            return False
        target = pdu.redacts
        if target is None:
            raise MatrixError(
                Errcode.MISSING_PARAM, "An m.room.redaction needs 'redacts': the event to redact"
            )
        original = (await self._state.get_pdus([target])).get(target)
        if original is None:
            raise MatrixError(Errcode.NOT_FOUND, "Event not found")
        if original.room_id != pdu.room_id:
            raise MatrixError(Errcode.INVALID_PARAM, "Cannot redact an event of another room")
        if original.type in _NEVER_REDACTED:
            raise MatrixError(Errcode.FORBIDDEN, f"{original.type} events cannot be redacted")
        by_power = has_redact_power(pdu.sender, auth_state, pdu.room_version)
        if not by_power and original.sender != pdu.sender:
            raise MatrixError(Errcode.FORBIDDEN, "You may not redact other users' events")
        return by_power

    # -- applying ----------------------------------------------------------------------

    async def _apply(
        self,
        snapshot: RoomSnapshot,
        pdu: Pdu,
        *,
        txn: TxnKey | None,
        redaction_by_power: bool,
    ) -> EventToPersist:
        """Allocate positions for ``pdu`` and move the snapshot past it."""
        new_group = replaces_state = None
        if pdu.is_state():
            new_group = await self._state.new_state_group(snapshot, {pdu.state_tuple: pdu.event_id})
            replaces_state = snapshot.state.get(pdu.state_tuple)
        persisted = self._allocate(
            pdu,
            new_group,
            txn=txn,
            extremities=(pdu.event_id,),
            group=snapshot.state_group.state_group,
            redaction_by_power=redaction_by_power,
            replaces_state=replaces_state,
        )
        snapshot.extremities = [pdu.event_id]
        snapshot.depth = pdu.depth
        if new_group is not None:
            snapshot.state[pdu.state_tuple] = pdu.event_id
            snapshot.state_group = new_group.row
            if pdu.type == "m.room.member" and pdu.membership is not None:
                snapshot.set_membership(UserID(pdu.state_key or ""), pdu.membership)
        self._state.cache_events([stored_event(persisted)])
        return replace(persisted, joined_servers=snapshot.joined_servers())

    async def _apply_over_fork(
        self,
        snapshot: RoomSnapshot,
        pdu: Pdu,
        before: dict[StateKey, EventID],
        *,
        txn: TxnKey | None,
        redaction_by_power: bool,
    ) -> EventToPersist:
        """``_apply`` for an event that cites only some of the forward extremities: its
        state group holds ``before`` (a child of its last prev event's group) plus the
        event, and the room's current state is resolved again (``_state_before``)."""
        cited = (await self._state.get_dag_events([pdu.prev_event_ids[-1]]))[pdu.prev_event_ids[-1]]
        parent = await self._state.state_group_row(cited.state_group)
        parent_state = await self._state.state_ids_at_group(parent.state_group)
        groups: list[NewStateGroup] = []
        after_row = parent
        if before != parent_state:
            groups.append(await self._state.group_holding(before, [(parent, parent_state)]))
            after_row = groups[-1].row
        after_state = dict(before)
        if pdu.is_state():
            after_state[pdu.state_tuple] = pdu.event_id
            groups.append(
                await self._state.child_state_group(after_row, {pdu.state_tuple: pdu.event_id})
            )
            after_row = groups[-1].row
        current = await self._resolver.current_after(snapshot, pdu, after_state, after_row)
        if current.new_group is not None:
            groups.append(current.new_group)
        persisted = replace(
            self._allocate(
                pdu,
                None,
                txn=txn,
                extremities=tuple(current.extremities),
                group=after_row.state_group,
                redaction_by_power=redaction_by_power,
                replaces_state=before.get(pdu.state_tuple) if pdu.is_state() else None,
            ),
            current_state_group=current.row.state_group,
            current_state_changes=current.changes,
            extra_state_groups=tuple(groups),
        )
        current.move(snapshot, pdu.depth)
        self._state.cache_events([stored_event(persisted)])
        return replace(persisted, joined_servers=snapshot.joined_servers())

    def _allocate(
        self,
        pdu: Pdu,
        new_group: NewStateGroup | None,
        *,
        txn: TxnKey | None,
        extremities: tuple[EventID, ...],
        group: int | None = None,
        new_room: RoomRow | None = None,
        redaction_by_power: bool = False,
        replaces_state: EventID | None = None,
    ) -> EventToPersist:
        relates_to, rel_type = relation_columns(pdu.content)
        state_group = new_group.row.state_group if new_group is not None else group
        owners = self._owners
        assert state_group is not None
        return EventToPersist(
            pdu=pdu,
            stream_ordering=self.allocate_stream(),
            state_group=state_group,
            new_state_group=new_group,
            txn=txn,
            relates_to=relates_to,
            rel_type=rel_type,
            new_extremities=extremities,
            new_room=new_room,
            current_state_group=new_group.row.state_group if new_group is not None else None,
            redaction_by_power=redaction_by_power,
            replaces_state=replaces_state,
            holding=None
            if owners is None
            else owners.holding(owners.shard(pdu.room_id)).generation,
        )

    def allocate_backfill_stream(self) -> int:
        """The next position for backfilled history: counting down below every other,
        so it sorts before the room's known events and is never new to /sync."""
        stream = self._next_backfill_stream
        self._next_backfill_stream -= self._positions.lane.count
        return stream

    def allocate_stream(self) -> int:
        """The next stream position (also for events received over federation and remote
        invites). It must then be enqueued (``persist``) with nothing awaited in between,
        announced (``EventDispatcher.on_remote_membership``) or abandoned: until it is,
        no higher position is announced."""
        if self._refused is not None:
            raise MatrixError(Errcode.UNKNOWN, self._refused, status=503)
        return self._positions.allocate()

    def abandon_stream(self, position: int) -> None:
        """``position`` will never be stored: the stream moves on past it (what higher
        positions held back is announced)."""
        for wake in self._positions.finished(position):
            wake()

    async def persist(self, events: Sequence[EventToPersist]) -> None:
        """Group-commit events built elsewhere (received over federation); the caller
        holds their room's lock while enqueueing, like local sends."""
        self._state.cache_events([stored_event(e) for e in events])
        await asyncio.shield(self._enqueue(events))

    def _enqueue(self, events: Sequence[EventToPersist]) -> asyncio.Future[None]:
        """Queue ``events`` for the writer. Until the commit settles they are readable
        by ID (``StateService.hold_in_flight``) and their state events are
        ``_uncommitted``, so a request they answer can wait for it."""
        done = self._writer.enqueue(events)
        groups = [
            group
            for e in events
            for group in (
                *((e.new_state_group,) if e.new_state_group else ()),
                *e.extra_state_groups,
            )
        ]
        self._state.hold_in_flight([stored_event(e) for e in events], groups, done)
        state_ids = [e.pdu.event_id for e in events if e.pdu.is_state()]
        for event_id in state_ids:
            self._uncommitted[event_id] = done

        def settled(_: asyncio.Future[None]) -> None:
            for event_id in state_ids:
                if self._uncommitted.get(event_id) is done:
                    del self._uncommitted[event_id]

        done.add_done_callback(settled)
        return done

    # -- failure -----------------------------------------------------------------------

    async def _reload(self, room_id: RoomID) -> RoomSnapshot:
        snapshot = await self._state.get_room(room_id)
        if snapshot is None:
            raise MatrixError(Errcode.NOT_FOUND, "Unknown room")
        return snapshot
