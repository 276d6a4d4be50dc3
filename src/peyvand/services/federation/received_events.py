"""Events received from other servers (Server-Server API, "Checks performed on receipt of
a PDU").

Every PDU goes through, in order:

1. format checks for its room version (``events.received.parse_pdu``) — else dropped;
2. its origin server's signature (the key ring) — else dropped;
3. its content hash — else it is redacted before anything else looks at it;
4. the authorization rules against its own ``auth_events`` (fetched from the sending
   server when missing, and checked the same way, as outliers) — else rejected;
5. the rules against the state before it (the state after its ``prev_events``, resolved
   with state resolution v2 / v2.1 where they disagree; missing ``prev_events`` are
   fetched with ``/get_missing_events``, and where a gap remains the state at the missing
   event comes from ``/state_ids``) — else rejected;
6. the rules against the room's current state — else soft-failed; so is an event whose
   sender the server's moderation policy lists ban (``banned_sender``).

Accepted events join the timeline through the same group commit as local events, under the
room's lock; the room's current state becomes the resolution of the states after each of
its new forward extremities (the event among them), as on every other server
(``services.state_resolution``). Rejected and soft-failed events are kept outside the timeline
(``event_outliers``) with the state group they saw, so they never re-enter state, are
never shown to clients and are never fetched again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from peyvand.events.auth import (
    AuthError,
    auth_types_for_event,
    check_auth_events_list,
    check_auth_rules,
)
from peyvand.events.auth_order import auth_topological_order
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.received import InvalidPdu, check_content_hash_or_redact, parse_pdu
from peyvand.events.redaction import has_redact_power
from peyvand.events.relations import relation_columns
from peyvand.events.server_acl import server_allowed
from peyvand.events.state_res import StateResError
from peyvand.services.federation.forwarded_pdus import ForwardedPdus
from peyvand.services.federation.partial_state import PartialStateRooms
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.services.timeline.state_resolution import StateResolver
from peyvand.storage.events import EventStore
from peyvand.storage.models import EventToPersist, NewStateGroup, OutlierRow, StateGroupRow
from peyvand.types import EventID, RoomID, ServerName, server_name_of

logger = logging.getLogger(__name__)

CREATE_KEY: Final[StateKey] = ("m.room.create", "")
_ACL_KEY: Final[StateKey] = ("m.room.server_acl", "")
# Bounds on what one received event may make us fetch.
_MAX_MISSING_PREV = 10
_MAX_AUTH_FETCH = 200
_MAX_BACKFILL = 100
_MAX_STATE_IDS = 50_000
_MAX_STATE_FETCH = 1_000


class RemoteEvents(Protocol):
    """Fetching events from another server (``FederationTransport``)."""

    async def get_event(self, destination: ServerName, event_id: EventID) -> Any: ...

    async def get_missing_events(
        self,
        destination: ServerName,
        room_id: RoomID,
        earliest: Sequence[EventID],
        latest: Sequence[EventID],
        limit: int,
        min_depth: int,
    ) -> list[Any]: ...

    async def get_state_ids(
        self, destination: ServerName, room_id: RoomID, event_id: EventID
    ) -> tuple[list[EventID], list[EventID]]: ...

    async def backfill(
        self, destination: ServerName, room_id: RoomID, event_ids: Sequence[EventID], limit: int
    ) -> list[Any]: ...


SignatureCheck = Callable[[Sequence[Pdu]], Awaitable[list[bool]]]
"""Whether each event carries valid signatures of the servers that must sign it."""

Enqueue = Callable[[Sequence[EventToPersist]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one received PDU."""

    event_id: EventID
    status: str  # "accepted", "rejected", "soft_failed", "duplicate"
    reason: str | None = None


class FederationEventHandler:
    def __init__(
        self,
        state: StateService,
        store: EventStore,
        check_signatures: SignatureCheck,
        remote: RemoteEvents,
        allocate_stream: Callable[[], int],
        enqueue: Enqueue,
        allocate_backfill_stream: Callable[[], int],
        server_name: ServerName,
        banned_sender: Callable[[Pdu], str | None],
        *,
        partial_state: PartialStateRooms | None = None,
    ) -> None:
        """Events for which ``banned_sender`` gives a reason are soft-failed (kept out of
        the timeline and current state, like events the current state does not allow,
        however they arrive: pushed, or pulled to fill a gap).

        In a room whose state is partial (``partial_state``: joined without its members,
        MSC3706) an event is authorised against the resolution of the partial state
        before it with its own auth events, and never soft-failed: the state lacks
        members (as Synapse does; the resync checks them again); history is backfilled
        from the room's ``servers_in_room`` too."""
        self._state = state
        self._resolver = StateResolver(state)
        self._store = store
        self._check_signatures = check_signatures
        self._remote = remote
        self._allocate_stream = allocate_stream
        self._enqueue = enqueue
        self._allocate_backfill_stream = allocate_backfill_stream
        self._server_name = server_name
        self._banned_sender = banned_sender
        self._partial_state = partial_state
        self._forwarded: ForwardedPdus | None = None

    def forward_rooms(self, forwarded: ForwardedPdus) -> None:
        """A deployment: the PDUs of rooms another event writer writes are stored by it
        (``services.federation.forwarded_pdus``)."""
        self._forwarded = forwarded

    # -- entry points ------------------------------------------------------------------

    async def receive_pdus(
        self, origin: ServerName, raw_pdus: Sequence[Any], *, forwarded: bool = False
    ) -> dict[str, JsonResult]:
        """PUT /send's PDUs: each processed in depth order; the per-event results.
        ``forwarded``: handed here by another process of the deployment."""
        results: dict[str, JsonResult] = {}
        if self._forwarded is not None:
            raw_pdus, elsewhere = self._forwarded.split(raw_pdus, forwarded=forwarded)
            if elsewhere:
                results.update(await self._forwarded.forward(origin, elsewhere))
        parsed: list[Pdu] = []
        for raw in raw_pdus:
            pdu = await self._parse(raw)
            if pdu is not None:
                parsed.append(pdu)
        parsed.sort(key=lambda p: p.depth)
        for pdu in parsed:
            snapshot = await self._state.get_room(pdu.room_id)
            if snapshot is not None and not await self.origin_allowed(origin, snapshot):
                results[pdu.event_id] = {"error": "Server is denied by the room's ACL"}
                continue
            try:
                outcome = await self.process_pdu(origin, pdu)
            except DroppedPdu as exc:
                results[pdu.event_id] = {"error": str(exc)}
                continue
            except StateResError as exc:
                logger.warning("state resolution failed for %s: %s", pdu.event_id, exc)
                results[pdu.event_id] = {"error": "state resolution failed"}
                continue
            if outcome.status in ("rejected",):
                results[pdu.event_id] = {"error": outcome.reason or "rejected"}
            else:
                results[pdu.event_id] = {}
        return results

    async def origin_allowed(self, origin: ServerName, snapshot: RoomSnapshot) -> bool:
        """The room's server ACL lets ``origin`` take part ("Server Access Control
        Lists"); no ACL in the room lets everyone."""
        acl_id = snapshot.state.get(_ACL_KEY)
        if acl_id is None:
            return True
        acl = (await self._state.get_pdus([acl_id])).get(acl_id)
        return acl is None or server_allowed(acl.content, origin)

    async def _parse(self, raw: Any) -> Pdu | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("room_id"), str):
            return None
        snapshot = await self._state.get_room(RoomID(raw["room_id"]))
        if snapshot is None:
            return None  # not a room this server takes part in
        try:
            return parse_pdu(raw, snapshot.room_version, room_id=snapshot.room_id)
        except InvalidPdu as exc:
            logger.info("dropping invalid PDU in %s: %s", snapshot.room_id, exc)
            return None

    async def process_pdu(self, origin: ServerName, pdu: Pdu, *, fill_gaps: bool = True) -> Outcome:
        """Run every check on one parsed PDU of a known room and store it accordingly.

        With ``fill_gaps`` a gap before the event is first filled with
        ``/get_missing_events``; the events pulled that way are processed without it (their
        own gaps are bridged with ``/state_ids``), so one PDU costs a bounded number of
        requests. Raises ``DroppedPdu`` when the event cannot be processed at all."""
        if await self._known(pdu.event_id):
            return Outcome(pdu.event_id, "duplicate")
        pdu = await self._verified(pdu)
        if fill_gaps:
            await self._fetch_missing_prev_events(origin, pdu)
        await self._ensure_auth_events(origin, [pdu])
        while True:
            snapshot = await self._state.get_room(pdu.room_id)
            if snapshot is None:
                raise DroppedPdu("unknown room")
            # Decided before the states are read: they may be partial even if the room's
            # state is completed meanwhile.
            partial = self._partial_state is not None and self._partial_state.is_partial(
                pdu.room_id
            )
            # The states after the prev events are immutable: work them out (fetching from
            # other servers where needed) before taking the room's lock, which local sends
            # wait on.
            gap = not all([await self._have_in_dag(p) for p in pdu.prev_event_ids])
            befores = [await self._state_after(origin, pdu.room_id, p) for p in pdu.prev_event_ids]
            async with snapshot.lock:
                if self._state.is_forgotten(snapshot):
                    # Replaced while we waited (a partial state completed, a failed
                    # commit): moving this one would leave the room's new snapshot
                    # without the event. Start again from the reloaded one (whose
                    # completed state groups the states above may predate).
                    continue
                if await self._known(pdu.event_id):
                    return Outcome(pdu.event_id, "duplicate")
                try:
                    return await self._apply(
                        origin, snapshot, pdu, befores, partial=partial, gap=gap
                    )
                except _SnapshotReplaced:
                    continue

    # -- checks ------------------------------------------------------------------------

    async def _known(self, event_id: EventID) -> bool:
        if await self._state.get_event(event_id) is not None:
            return True
        outlier = (await self._store.get_outliers([event_id])).get(event_id)
        return outlier is not None and outlier.status != "outlier"

    async def _verified(self, pdu: Pdu) -> Pdu:
        """Steps 2 and 3: signatures (drop) and content hash (redact)."""
        (valid,) = await self._check_signatures([pdu])
        if not valid:
            raise DroppedPdu("invalid signature")
        checked, hash_ok = check_content_hash_or_redact(pdu)
        if not hash_ok:
            logger.info("content hash mismatch on %s: redacted", pdu.event_id)
        return checked

    async def _ensure_auth_events(self, origin: ServerName, pdus: Sequence[Pdu]) -> None:
        """Fetch every auth event we lack (transitively), check each against its own auth
        events and store it as an outlier (rejected ones marked so)."""
        fetched = await self._auth_closure_to_fetch(origin, pdus, {})
        await self._check_and_store(list(fetched.values()))

    async def _auth_closure_to_fetch(
        self, origin: ServerName, pdus: Sequence[Pdu], in_hand: Mapping[EventID, Pdu]
    ) -> dict[EventID, Pdu]:
        """The auth events of ``pdus`` (transitively) that are neither stored here nor in
        ``in_hand``, fetched from ``origin`` (bounded)."""
        wanted = {a for pdu in pdus for a in pdu.auth_event_ids}
        fetched: dict[EventID, Pdu] = {}
        while wanted:
            have = await self._state.get_pdus(wanted)
            missing = [e for e in wanted if e not in have and e not in fetched and e not in in_hand]
            if not missing:
                break
            if len(fetched) + len(missing) > _MAX_AUTH_FETCH:
                raise DroppedPdu("auth chain too long to fetch")
            wanted = set()
            for event_id in missing:
                pdu = await self._fetch_event(origin, pdus[0].room_id, event_id)
                fetched[event_id] = pdu
                wanted.update(pdu.auth_event_ids)
        return fetched

    async def _check_and_store(self, fetched: Sequence[Pdu]) -> None:
        """Check fetched events against their own auth events, auth parents first (a
        rejection reaches every event citing the rejected one), and store them as outliers:
        rejected ones marked so, never usable as auth events or state."""
        if not fetched:
            return
        by_id = {p.event_id: p for p in fetched}
        rejected: set[EventID] = set()
        rows = []
        for pdu in auth_topological_order(by_id):
            reason = None
            if any(a in rejected for a in pdu.auth_event_ids):
                reason = "auth event was rejected"
            else:
                reason = await self._auth_against_auth_events(pdu, by_id)
            if reason is not None:
                rejected.add(pdu.event_id)
            rows.append(OutlierRow(pdu, "rejected" if reason else "outlier", reason))
        await self._store.persist_outliers(rows)

    async def _fetch_event(self, origin: ServerName, room_id: RoomID, event_id: EventID) -> Pdu:
        snapshot = await self._state.get_room(room_id)
        if snapshot is None:
            raise DroppedPdu("unknown room")
        try:
            raw = await self._remote.get_event(origin, event_id)
            pdu = parse_pdu(raw, snapshot.room_version, room_id=room_id)
        except InvalidPdu as exc:
            raise DroppedPdu(f"invalid auth event {event_id}: {exc}") from exc
        except Exception as exc:
            raise DroppedPdu(f"cannot fetch event {event_id}: {exc}") from exc
        if pdu.event_id != event_id:
            raise DroppedPdu(f"{origin} answered {pdu.event_id} for {event_id}")
        return await self._verified(pdu)

    async def _auth_against_auth_events(
        self, pdu: Pdu, extra: Mapping[EventID, Pdu] | None = None
    ) -> str | None:
        """Step 4; the reason it fails, or None."""
        have = dict(extra or {})
        have.update(await self._state.get_pdus(e for e in pdu.auth_event_ids if e not in have))
        rejected = await self._rejected_ids(pdu.auth_event_ids)
        auth_events = [have[e] for e in pdu.auth_event_ids if e in have]
        if len(auth_events) != len(pdu.auth_event_ids):
            return "missing auth events"
        if rejected:
            return "auth event was rejected"
        create = await self._create_event(pdu)
        try:
            check_auth_events_list(pdu, auth_events, create_event=create)
            auth_state = {a.state_tuple: a for a in auth_events}
            if create is not None:
                auth_state[CREATE_KEY] = create
            check_auth_rules(pdu, auth_state)
        except AuthError as exc:
            return exc.message
        return None

    async def _rejected_ids(self, event_ids: Iterable[EventID]) -> set[EventID]:
        outliers = await self._store.get_outliers(event_ids)
        return {e for e, row in outliers.items() if row.status == "rejected"}

    async def _create_event(self, pdu: Pdu) -> Pdu | None:
        """The room's create event (in v12 not among auth events, implied by the room ID)."""
        snapshot = await self._state.get_room(pdu.room_id)
        if snapshot is None or CREATE_KEY not in snapshot.state:
            return None
        return (await self._state.get_pdus([snapshot.state[CREATE_KEY]])).get(
            snapshot.state[CREATE_KEY]
        )

    async def _auth_against_state(self, pdu: Pdu, state: Mapping[StateKey, EventID]) -> str | None:
        try:
            check_auth_rules(pdu, await self._auth_state(pdu, state))
        except AuthError as exc:
            return exc.message
        return None

    async def _auth_state(self, pdu: Pdu, state: Mapping[StateKey, EventID]) -> dict[StateKey, Pdu]:
        """The events of ``state`` that authorise ``pdu`` (and the create event)."""
        keys = auth_types_for_event(
            pdu.room_version, pdu.type, pdu.sender, pdu.state_key, pdu.content
        )
        keys.add(CREATE_KEY)
        wanted = {k: state[k] for k in keys if k in state}
        events = await self._state.get_pdus(wanted.values())
        return {k: events[e] for k, e in wanted.items() if e in events}

    async def _redaction_by_power(self, pdu: Pdu, *states: Mapping[StateKey, EventID]) -> bool:
        """Rooms v3+ "Handling redactions", condition 1, for a received redaction: its
        sender has the redact level in every state it was authorised against, its own
        ``auth_events`` and ``states`` (as in Synapse). Otherwise it takes effect only on
        events of its sender's server (``events.redaction.redaction_takes_effect``, at
        commit). False for other events."""
        if pdu.type != "m.room.redaction":
            return False
        have = await self._state.get_pdus(pdu.auth_event_ids)
        claimed = {a.state_tuple: a for a in have.values()}
        if (create := await self._create_event(pdu)) is not None:
            claimed[CREATE_KEY] = create
        if not has_redact_power(pdu.sender, claimed, pdu.room_version):
            return False
        for state in states:
            auth_state = await self._auth_state(pdu, state)
            if not has_redact_power(pdu.sender, auth_state, pdu.room_version):
                return False
        return True

    # -- history -----------------------------------------------------------------------

    async def backfill(self, room_id: RoomID, limit: int) -> bool:
        """Pull history older than the room's earliest local event from a server in the
        room (GET /backfill); whether any arrived. Backfilled events are checked like any
        received event against their own auth events, placed before every local event
        (negative stream positions: never news for /sync) and see the state of the
        earliest local event; they change neither current state nor extremities."""
        if self._forwarded is not None and not self._forwarded.writes_here(room_id):
            return False  # another writer's room: its history is stored by it
        snapshot = await self._state.get_room(room_id)
        if snapshot is None:
            return False
        earliest = await self._store.get_room_events(
            room_id, after=None, before=None, limit=1, newest_first=False
        )
        if not earliest or earliest[0].pdu.type == "m.room.create":
            return False
        first = earliest[0]
        # Purged history (kept aside as "purged") is known: never fetched again.
        missing = [e for e in first.pdu.prev_event_ids if not await self._known(e)]
        if not missing:
            return False
        partial_servers = (
            self._partial_state.servers(room_id) if self._partial_state is not None else set()
        )
        servers = sorted(
            (
                {server_name_of(u) for u, m in snapshot.memberships.items() if m == "join"}
                | partial_servers
            )
            - {self._server_name}
        )
        for server in servers:
            try:
                raw_events = await self._remote.backfill(
                    server, room_id, missing, min(limit, _MAX_BACKFILL)
                )
            except Exception as exc:
                logger.info("backfill of %s from %s failed: %s", room_id, server, exc)
                continue
            if await self._store_backfilled(
                server, snapshot, first.state_group, missing, raw_events
            ):
                return True
        return False

    async def _store_backfilled(
        self,
        origin: ServerName,
        snapshot: RoomSnapshot,
        state_group: int,
        asked: Sequence[EventID],
        raw_events: Sequence[Any],
    ) -> bool:
        parsed: dict[EventID, Pdu] = {}
        for raw in raw_events[:_MAX_BACKFILL]:
            try:
                pdu = parse_pdu(raw, snapshot.room_version, room_id=snapshot.room_id)
            except InvalidPdu:
                continue
            parsed[pdu.event_id] = pdu
        # Only the events asked for and their ancestors among the answer: a server cannot
        # add unrelated history this way.
        reachable: set[EventID] = set()
        frontier = [e for e in asked if e in parsed]
        while frontier:
            event_id = frontier.pop()
            if event_id in reachable:
                continue
            reachable.add(event_id)
            frontier.extend(p for p in parsed[event_id].prev_event_ids if p in parsed)
        pdus = [parsed[e] for e in reachable if not await self._known(e)]
        if not pdus:
            return False
        valid = await self._check_signatures(pdus)
        pdus = [check_content_hash_or_redact(p)[0] for p, ok in zip(pdus, valid, strict=True) if ok]
        try:
            await self._ensure_auth_events(origin, pdus)
        except DroppedPdu as exc:
            logger.info("backfill from %s dropped: %s", origin, exc)
            return False
        while True:
            current = await self._state.get_room(snapshot.room_id)
            if current is None:
                return False
            async with current.lock:
                if self._state.is_forgotten(current):
                    # Replaced while we waited (a partial state completed, a failed
                    # commit): the extremities stored with the events must be the
                    # reloaded snapshot's, else they undo what was applied to it.
                    continue
                try:
                    return await self._persist_backfilled(current, pdus, state_group)
                except _SnapshotReplaced:
                    continue

    async def _persist_backfilled(
        self, snapshot: RoomSnapshot, pdus: Sequence[Pdu], state_group: int
    ) -> bool:
        """Store the backfilled ``pdus`` that pass their own auth events, with the room's
        extremities unchanged (``snapshot`` is its current one, its lock held); whether
        any were."""
        stored = []
        for pdu in sorted(pdus, key=lambda p: (-p.depth, p.event_id)):
            if await self._auth_against_auth_events(pdu) is not None:
                continue
            # Backfilled history saw no state here but its own auth events.
            by_power = await self._redaction_by_power(pdu)
            relates_to, rel_type = relation_columns(pdu.content)
            stored.append(
                EventToPersist(
                    pdu=pdu,
                    stream_ordering=self._allocate_backfill_stream(),
                    state_group=state_group,
                    new_state_group=None,
                    txn=None,
                    relates_to=relates_to,
                    rel_type=rel_type,
                    new_extremities=tuple(snapshot.extremities),
                    current_state_changes=(),
                    was_outlier=pdu.event_id in await self._store.get_outliers([pdu.event_id]),
                    redaction_by_power=by_power,
                    redacted_by=await self._store.redaction_on_arrival(pdu),
                )
            )
        if stored:
            self._still_current(snapshot)
            await self._enqueue(stored)
        return bool(stored)

    # -- the DAG -----------------------------------------------------------------------

    async def _fetch_missing_prev_events(self, origin: ServerName, pdu: Pdu) -> None:
        """Fill a gap before ``pdu`` with ``/get_missing_events`` (bounded); whatever stays
        missing is handled by ``_state_before`` through ``/state_ids``."""
        missing = [e for e in pdu.prev_event_ids if not await self._have_in_dag(e)]
        if not missing:
            return
        snapshot = await self._state.get_room(pdu.room_id)
        if snapshot is None:
            return
        try:
            raw_events = await self._remote.get_missing_events(
                origin,
                pdu.room_id,
                list(snapshot.extremities),
                [pdu.event_id],
                _MAX_MISSING_PREV,
                max(0, snapshot.depth - _MAX_MISSING_PREV),
            )
        except Exception as exc:
            logger.info("get_missing_events from %s failed: %s", origin, exc)
            return
        found = []
        for raw in raw_events[:_MAX_MISSING_PREV]:
            try:
                found.append(parse_pdu(raw, snapshot.room_version, room_id=pdu.room_id))
            except InvalidPdu as exc:
                logger.info("invalid missing event from %s: %s", origin, exc)
        for missing_pdu in sorted(found, key=lambda p: p.depth):
            if missing_pdu.event_id == pdu.event_id or await self._known(missing_pdu.event_id):
                continue
            try:
                await self.process_pdu(origin, missing_pdu, fill_gaps=False)
            except (DroppedPdu, StateResError) as exc:
                logger.info("missing event %s dropped: %s", missing_pdu.event_id, exc)

    async def _have_in_dag(self, event_id: EventID) -> bool:
        if await self._state.get_event(event_id) is not None:
            return True
        row = (await self._store.get_outliers([event_id])).get(event_id)
        return row is not None and row.state_group is not None

    async def _state_after(self, origin: ServerName, room_id: RoomID, event_id: EventID) -> StateAt:
        """The state after ``event_id`` and a group holding it (None: not stored yet)."""
        event = await self._state.get_event(event_id)
        if event is not None:
            group = await self._state.state_group_row(event.state_group)
            return StateAt(await self._state.state_ids_at_group(group.state_group), group)
        row = (await self._store.get_outliers([event_id])).get(event_id)
        if row is not None and row.state_group is not None:
            group = await self._state.state_group_row(row.state_group)
            state = await self._state.state_ids_at_group(group.state_group)
            if row.status == "soft_failed" and row.pdu.is_state():
                state = {**state, row.pdu.state_tuple: row.pdu.event_id}
                return StateAt(state, None)
            return StateAt(state, group)
        return await self._remote_state_after(origin, room_id, event_id)

    async def _remote_state_after(
        self, origin: ServerName, room_id: RoomID, event_id: EventID
    ) -> StateAt:
        """The state after an event we do not have, from ``/state_ids`` at it (the state
        before it) plus the event itself, with the state events and auth chain fetched and
        stored as outliers."""
        try:
            state_ids, auth_ids = await self._remote.get_state_ids(origin, room_id, event_id)
        except Exception as exc:
            raise DroppedPdu(f"cannot get the state at {event_id}: {exc}") from exc
        if len(state_ids) + len(auth_ids) > _MAX_STATE_IDS:
            raise DroppedPdu(f"the state at {event_id} is too large to fetch")
        prev = await self._fetch_event(origin, room_id, event_id)
        have = await self._state.get_pdus({*state_ids, *auth_ids})
        needed = [e for e in dict.fromkeys([*state_ids, *auth_ids]) if e not in have]
        if len(needed) > _MAX_STATE_FETCH:
            raise DroppedPdu(f"too much of the state at {event_id} is unknown here")
        fetched = {e: await self._fetch_event(origin, room_id, e) for e in needed}
        if prev.event_id not in have:
            fetched[prev.event_id] = prev
        # Every fetched event is authorised against its own auth chain before it may be
        # state: a server cannot slip unauthorised events in through /state_ids.
        fetched.update(await self._auth_closure_to_fetch(origin, list(fetched.values()), fetched))
        await self._check_and_store(list(fetched.values()))
        events = await self._state.get_pdus(state_ids)
        rejected = await self._rejected_ids(state_ids)
        state = {
            events[e].state_tuple: e
            for e in state_ids
            if e in events
            and events[e].is_state()
            and events[e].room_id == room_id
            and e not in rejected
        }
        if prev.is_state() and prev.event_id not in await self._rejected_ids([prev.event_id]):
            state[prev.state_tuple] = prev.event_id
        return StateAt(state, None)

    # -- applying ----------------------------------------------------------------------

    async def _apply(
        self,
        origin: ServerName,
        snapshot: RoomSnapshot,
        pdu: Pdu,
        befores: Sequence[StateAt],
        *,
        partial: bool,
        gap: bool = False,
    ) -> Outcome:
        """Steps 4-6 and storage, under the room's lock (while ``partial``, 5 against
        ``_partial_auth_state`` and no 6). ``gap``: some prev events were never received
        here (``_soft_fail_state``)."""
        reason = await self._auth_against_auth_events(pdu)
        if not befores:
            raise DroppedPdu("an event without prev_events")
        if len(befores) == 1:
            before = befores[0]
        else:
            before = StateAt(
                await self._resolver.resolve(pdu.room_version, [b.state for b in befores]), None
            )
        before_row, before_new = await self._group_for(before, befores, snapshot)
        if reason is None:
            auth_before = await self._partial_auth_state(pdu, before.state) if partial else None
            reason = await self._auth_against_state(
                pdu, before.state if auth_before is None else auth_before
            )
        if reason is not None:
            logger.info("rejected %s from %s: %s", pdu.event_id, origin, reason)
            await self._store_aside(pdu, "rejected", reason, before_row, before_new)
            return Outcome(pdu.event_id, "rejected", reason)
        soft_fail = None
        if not partial:
            soft_state = await self._soft_fail_state(snapshot, pdu, before.state, gap)
            soft_fail = await self._auth_against_state(pdu, soft_state)
        if soft_fail is None:
            soft_fail = self._banned_sender(pdu)
        if soft_fail is not None:
            logger.info("soft-failed %s from %s: %s", pdu.event_id, origin, soft_fail)
            await self._store_aside(pdu, "soft_failed", soft_fail, before_row, before_new)
            return Outcome(pdu.event_id, "soft_failed", soft_fail)
        by_power = await self._redaction_by_power(pdu, before.state, snapshot.state)
        new_groups = [before_new] if before_new is not None else []
        after_state = dict(before.state)
        after_row = before_row
        if pdu.is_state():
            after_state[pdu.state_tuple] = pdu.event_id
            child = await self._state.child_state_group(before_row, {pdu.state_tuple: pdu.event_id})
            new_groups.append(child)
            after_row = child.row
        replaces_state = before.state.get(pdu.state_tuple) if pdu.is_state() else None
        await self._accept(
            snapshot, pdu, after_state, after_row, new_groups, by_power, replaces_state
        )
        return Outcome(pdu.event_id, "accepted")

    async def _partial_auth_state(
        self, pdu: Pdu, before: Mapping[StateKey, EventID]
    ) -> dict[StateKey, EventID]:
        """Step 5's state while the room's state is partial: the resolution of the
        (partial) state before the event with the event's own auth events, as Synapse's
        ``_check_event_auth``. The partial state may lack the sender's membership, so the
        auth events stand in for what it lacks, yet the power levels, bans and join rules
        known here win where resolution says so: a demoted or banned member cannot act by
        citing its old power or old join."""
        have = await self._state.get_pdus(pdu.auth_event_ids)
        claimed = {p.state_tuple: e for e, p in have.items() if p.is_state()}
        return await self._resolver.resolve(pdu.room_version, [dict(before), claimed])

    async def _soft_fail_state(
        self,
        snapshot: RoomSnapshot,
        pdu: Pdu,
        before: Mapping[StateKey, EventID],
        gap: bool,
    ) -> Mapping[StateKey, EventID]:
        """The state step 6 checks against: the room's current state; after a gap (the
        state before the event came from ``/state_ids``), the resolution of the states
        after the forward extremities and the state before the event, as in Synapse's
        ``_check_for_soft_fail``: a server that missed part of the room does not trust
        its own current state alone, yet still checks, as gaps are easy to make."""
        if not gap:
            return snapshot.state
        extremities = [await self._resolver.state_after(e) for e in snapshot.extremities]
        return await self._resolver.resolve(pdu.room_version, [*extremities, before])

    async def _group_for(
        self, before: StateAt, befores: Sequence[StateAt], snapshot: RoomSnapshot
    ) -> tuple[StateGroupRow, NewStateGroup | None]:
        """A state group holding ``before``: an existing one, or a new one derived from
        the group of one of the prev events (or, with none, of the current state), a new
        root if ``before`` lost keys of each (``group_holding``)."""
        if before.group is not None:
            return before.group, None
        candidates = [(b.group, b.state) for b in befores if b.group is not None]
        if not candidates:
            parent = snapshot.state_group
            candidates = [(parent, await self._state.state_ids_at_group(parent.state_group))]
        new = await self._state.group_holding(before.state, candidates)
        return new.row, new

    async def _store_aside(
        self,
        pdu: Pdu,
        status: str,
        reason: str,
        group: StateGroupRow,
        new_group: NewStateGroup | None,
    ) -> None:
        await self._store.persist_outliers(
            [OutlierRow(pdu, status, reason, group.state_group, new_group)]
        )

    async def _accept(
        self,
        snapshot: RoomSnapshot,
        pdu: Pdu,
        after_state: dict[StateKey, EventID],
        after_row: StateGroupRow,
        new_groups: list[NewStateGroup],
        redaction_by_power: bool,
        replaces_state: EventID | None,
    ) -> None:
        """Store an accepted event and move the room's current state and extremities;
        ``replaces_state``: what the event's key held in the state before it."""
        current = await self._resolver.current_after(snapshot, pdu, after_state, after_row)
        if current.new_group is not None:
            new_groups.append(current.new_group)
        relates_to, rel_type = relation_columns(pdu.content)
        was_outlier = pdu.event_id in await self._store.get_outliers([pdu.event_id])
        redacted_by = await self._store.redaction_on_arrival(pdu)
        self._still_current(snapshot)
        # The position is taken as the event is queued, nothing awaited in between: one
        # left unqueued would hold back every higher position's announcement (issue 21).
        persisted = EventToPersist(
            pdu=pdu,
            stream_ordering=self._allocate_stream(),
            state_group=after_row.state_group,
            new_state_group=None,
            txn=None,
            relates_to=relates_to,
            rel_type=rel_type,
            new_extremities=tuple(current.extremities),
            current_state_group=current.row.state_group,
            current_state_changes=current.changes,
            was_outlier=was_outlier,
            extra_state_groups=tuple(new_groups),
            redaction_by_power=redaction_by_power,
            redacted_by=redacted_by,
            replaces_state=replaces_state,
        )
        current.move(snapshot, pdu.depth)
        await self._enqueue([persisted])

    def _still_current(self, snapshot: RoomSnapshot) -> None:
        """Raise ``_SnapshotReplaced`` if ``snapshot`` was replaced while the event was
        worked out under its lock (a failed commit or a completed partial state reloads
        the room): what was decided from it (extremities, current state) may cite events
        that were never stored. Called with no await before the enqueue."""
        if self._state.is_forgotten(snapshot):
            raise _SnapshotReplaced


JsonResult = dict[str, str]


@dataclass(frozen=True, slots=True)
class StateAt:
    """A state map and, when it is exactly a stored group's, that group."""

    state: dict[StateKey, EventID]
    group: StateGroupRow | None


class _SnapshotReplaced(Exception):
    """The room's snapshot was replaced under an event being applied: start again."""


class DroppedPdu(Exception):
    """The PDU cannot be processed (bad signature, unfetchable history): not stored."""
