"""Completing the state of a room joined with partial state (MSC3706 / MSC3902, as
Synapse's ``_sync_partial_state_room``), in the background.

One task per partial room (resumed at start-up for rooms still partial): ask a server
in the room for the state at the join (``GET /state_ids``), fetch the events missing here
in bulk (``/event`` for a few, ``/state`` for many), check them as on receipt
(signatures, content hashes, the authorization rules against their own auth events, auth
parents first; events rejected here before stay out) and store them as outliers. Events
received or sent meanwhile are checked again against the full state before them; the
state the partial state lacked is then added to the room's state groups since the join,
the state events that failed leave every group (their keys hold what they held before,
as if rejected on receipt; the events stay in the timeline), the current state becomes
the resolution of the states after each forward extremity, the room stops being partial,
its waiters wake and its local members' /sync is told (the completion's position in a
stream of its own, as Synapse's un-partial-stated rooms). A failing server is followed
by the next of ``servers_in_room``; rounds of attempts go on while the server runs,
each attempt bounded in time, spaced by a capped backoff.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Protocol

from peyvand.background import BackgroundTask
from peyvand.events.auth import AuthError, auth_types_for_event, check_auth_rules
from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.received import InvalidPdu, check_content_hash_or_redact, parse_pdu
from peyvand.events.room_versions import RoomVersion
from peyvand.services.federation.outbound_join import check_auth_chain
from peyvand.services.federation.partial_state import PartialStateRooms
from peyvand.services.timeline.room_state import RoomSnapshot, StateService
from peyvand.services.timeline.state_resolution import StateResolver
from peyvand.storage.events import EventStore
from peyvand.storage.models import NewStateGroup, OutlierRow, StoredEvent
from peyvand.storage.partial_state import CompletedState, PartialStateRoom, PartialStateStore
from peyvand.types import EventID, RoomID, ServerName, UserID

logger = logging.getLogger(__name__)

_MAX_STATE_IDS: Final = 250_000  # state and auth chain IDs one answer may name
_FETCH_ONE_BY_ONE: Final = 50  # up to this many missing events: /event each, else /state
_CONCURRENT_FETCHES: Final = 8
_MAX_BACKOFF_SECONDS: Final = 60.0  # between rounds over every server, retried forever
_ATTEMPT_SECONDS: Final = 600.0  # getting the state from one server, fetches and checks
_WARN_EVERY_ROUNDS: Final = 8  # failed rounds between two warnings
_MAX_RECHECKED: Final = 10_000  # events received while partial, checked again
_SLICE: Final = 200  # events parsed or verified between two yields to the event loop

SignatureCheck = Callable[[Sequence[Pdu]], Awaitable[list[bool]]]
# A completion's stream position and the local users joined to the room (the notifier).
CompletionListener = Callable[[int, Iterable[UserID]], None]


class StateSource(Protocol):
    """Reading a room's state from another server (``FederationTransport``)."""

    async def get_state_ids(
        self, destination: ServerName, room_id: RoomID, event_id: EventID
    ) -> tuple[list[EventID], list[EventID]]: ...

    async def get_state(
        self, destination: ServerName, room_id: RoomID, event_id: EventID
    ) -> tuple[list[Any], list[Any]]: ...

    async def get_event(self, destination: ServerName, event_id: EventID) -> Any: ...


class PartialStateResync:
    def __init__(
        self,
        server_name: ServerName,
        rooms: PartialStateRooms,
        store: PartialStateStore,
        events: EventStore,
        state: StateService,
        remote: StateSource,
        check_signatures: SignatureCheck,
        on_completed: CompletionListener,
        *,
        first_backoff_seconds: float = 1.0,
        max_backoff_seconds: float = _MAX_BACKOFF_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._server_name = server_name
        self._rooms = rooms
        self._store = store
        self._events = events
        self._state = state
        self._resolver = StateResolver(state)
        self._remote = remote
        self._check_signatures = check_signatures
        self._on_completed = on_completed
        # One completion at a time: each takes the completion stream's next position.
        self._completing = asyncio.Lock()
        self._first_backoff = first_backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._clock = clock
        self._tasks: dict[RoomID, BackgroundTask] = {}
        self._rewrite_listeners: list[Callable[[RoomID], None]] = []
        # Told each room completed, before its waiters and the syncs are (a deployment's
        # other processes: ``partial_state_follower``).
        self.completed_hooks: list[Callable[[RoomID], None]] = []

    @property
    def rooms(self) -> PartialStateRooms:
        """The rooms partial here."""
        return self._rooms

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Resume the completion stream at its stored position and the resync of every
        room still partial."""
        self._on_completed(await self._store.max_completion(), ())
        for room in await self._store.rooms():
            if await self._state.get_event(room.join_event_id) is None:
                await self._store.forget(room.room_id)  # the join itself was never stored
                continue
            self._rooms.mark(room)
            self.resync(room.room_id)

    async def refuse_partial_rooms(self) -> None:
        """Several event writers (issue 21) join rooms with their full state and complete
        none: refuse to start while a room joined with partial state under one writer
        is not complete yet."""
        rooms = []
        for room in await self._store.rooms():
            if await self._state.get_event(room.join_event_id) is None:
                await self._store.forget(room.room_id)  # the join itself was never stored
            else:
                rooms.append(room)
        if rooms:
            raise RuntimeError(
                f"{len(rooms)} rooms joined with partial state are not complete yet (such "
                f"as {rooms[0].room_id}): run one event writer until they are, then several"
            )

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, {}
        for task in tasks.values():
            await task.stop()

    # -- the join ------------------------------------------------------------------------

    async def begin(self, room: PartialStateRoom) -> None:
        """Mark ``room`` partial, before its join is stored (a mark whose join never is
        gets dropped at the next start)."""
        await self._store.add_room(room, int(self._clock() * 1000))
        self._rooms.mark(room)

    async def abandon(self, room_id: RoomID) -> None:
        """The join was not stored after all."""
        self._rooms.completed(room_id)
        await self._store.forget(room_id)

    def resync(self, room_id: RoomID) -> None:
        """Start completing the room's state (unless it is already under way)."""
        task = self._tasks.get(room_id)
        if task is not None and task.running:
            return
        task = BackgroundTask(f"partial-state resync {room_id}", lambda: self._run(room_id))
        self._tasks[room_id] = task
        task.start()

    # -- what /sync asks -----------------------------------------------------------------

    def on_state_rewritten(self, listener: Callable[[RoomID], None]) -> None:
        """Call ``listener`` with the room each time a completion rewrites state groups
        of it that already existed (the missing state added, failed events taken out):
        what is kept per state group elsewhere must be dropped."""
        self._rewrite_listeners.append(listener)

    def is_partial(self, room_id: RoomID) -> bool:
        return self._rooms.is_partial(room_id)

    async def completed_between(self, since: int, until: int) -> set[RoomID]:
        """The rooms whose state was completed after stream position ``since``, up to
        ``until``."""
        return await self._store.completed_between(since, until)

    # -- the resync ----------------------------------------------------------------------

    async def _run(self, room_id: RoomID) -> None:
        """Rounds over the room's servers until one gives the full state, for as long as
        the server runs (as Synapse's ``_sync_partial_state_room``, which keeps trying
        while there are servers to ask): each attempt bounded in time, the rounds spaced
        by a backoff doubling up to ``max_backoff_seconds``, so neither a hostile nor a
        flaky resident keeps the room partial until a restart. The finished task is
        dropped."""
        try:
            backoff = self._first_backoff
            for rounds in itertools.count(1):
                room = self._rooms.get(room_id)
                if room is None:
                    return
                for server in self._servers(room):
                    try:
                        await self._resync_from(server, room)
                        return
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        logger.info("resync of %s from %s failed: %s", room_id, server, exc)
                if rounds % _WARN_EVERY_ROUNDS == 0:
                    logger.warning(
                        "the state of %s is still partial after %d rounds", room_id, rounds
                    )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
        finally:
            self._tasks.pop(room_id, None)

    def _servers(self, room: PartialStateRoom) -> list[ServerName]:
        """The server joined through first, then the others in the room at the join and
        any seen since (as Synapse prioritises them)."""
        snapshot = self._state.cached_room(room.room_id)
        seen = snapshot.joined_servers() if snapshot is not None else frozenset()
        servers = dict.fromkeys([room.joined_via, *sorted(room.servers), *sorted(seen)])
        servers.pop(self._server_name, None)
        return list(servers)

    async def _resync_from(self, server: ServerName, room: PartialStateRoom) -> None:
        """Get the full state at the join from ``server`` (bounded in time: a server
        answering slowly cannot hold the resync up), then complete the room with it."""
        async with asyncio.timeout(_ATTEMPT_SECONDS):
            full = await self._full_state_from(server, room)
        await self._complete(room, full, server)

    async def _full_state_from(
        self, server: ServerName, room: PartialStateRoom
    ) -> dict[StateKey, EventID]:
        """The state at the join as ``server`` gives it, each event checked."""
        snapshot = await self._state.get_room(room.room_id)
        if snapshot is None:
            raise ValueError("the room is gone")
        version = snapshot.room_version
        state_ids, auth_ids = await self._remote.get_state_ids(
            server, room.room_id, room.join_event_id
        )
        if len(state_ids) + len(auth_ids) > _MAX_STATE_IDS:
            raise ValueError("the state is too large")
        wanted = set(state_ids) | set(auth_ids)
        held = await self._state.get_pdus(wanted)
        fetched = await self._fetch(server, room, version, wanted - held.keys())
        # Events rejected here before stay rejected (as in Synapse): out of the state,
        # and what cites them falls with them.
        held_rejected = {e for e, p in held.items() if p.rejected_reason is not None}
        usable = {e: p for e, p in held.items() if e not in held_rejected}
        # Pure CPU work: in the executor, so the server answers requests meanwhile.
        rejected = held_rejected | await asyncio.get_running_loop().run_in_executor(
            None, check_auth_chain, {**usable, **fetched}
        )
        await self._events.persist_outliers(
            [
                OutlierRow(p, "rejected" if e in rejected else "outlier", None)
                for e, p in fetched.items()
            ]
        )
        events = {**usable, **fetched}
        full: dict[StateKey, EventID] = {}
        for event_id in state_ids:
            pdu = events.get(event_id)
            if pdu is None or event_id in rejected:
                continue
            if pdu.is_state() and pdu.room_id == room.room_id:
                full[pdu.state_tuple] = event_id
        if ("m.room.create", "") not in full:
            raise ValueError("the state has no create event")
        return full

    async def _fetch(
        self,
        server: ServerName,
        room: PartialStateRoom,
        version: RoomVersion,
        missing: set[EventID],
    ) -> dict[EventID, Pdu]:
        """The ``missing`` events from ``server``, format, signatures and content hashes
        checked (ValueError unless it gives them all, validly signed)."""
        if not missing:
            return {}
        raws: list[Any]
        if len(missing) <= _FETCH_ONE_BY_ONE:
            limit = asyncio.Semaphore(_CONCURRENT_FETCHES)

            async def one(event_id: EventID) -> Any:
                async with limit:
                    return await self._remote.get_event(server, event_id)

            raws = list(await asyncio.gather(*(one(e) for e in sorted(missing))))
        else:
            pdus, chain = await self._remote.get_state(server, room.room_id, room.join_event_id)
            raws = [*pdus, *chain]
        parsed: dict[EventID, Pdu] = {}
        # In slices, yielding between them: thousands of events must not hold up the
        # server's other requests (the user reads and sends meanwhile).
        for start in range(0, min(len(raws), _MAX_STATE_IDS), _SLICE):
            for raw in raws[start : start + _SLICE]:
                try:
                    pdu = parse_pdu(raw, version, room_id=room.room_id)
                except InvalidPdu as exc:
                    logger.info("invalid state event from %s: %s", server, exc)
                    continue
                if pdu.event_id in missing:
                    parsed[pdu.event_id] = check_content_hash_or_redact(pdu)[0]
            await asyncio.sleep(0)
        if len(parsed) != len(missing):
            raise ValueError(f"{len(missing) - len(parsed)} events of the state not given")
        pdus = list(parsed.values())
        for start in range(0, len(pdus), _SLICE):
            chunk = pdus[start : start + _SLICE]
            valid = await self._check_signatures(chunk)
            bad = [p.event_id for p, ok in zip(chunk, valid, strict=True) if not ok]
            if bad:
                raise ValueError(f"events with invalid signatures: {bad[:3]}")
            await asyncio.sleep(0)
        return parsed

    async def _complete(
        self, room: PartialStateRoom, full: Mapping[StateKey, EventID], server: ServerName
    ) -> None:
        """Check the events received or sent since the join against their full state,
        add what the partial state lacked, re-derive the current state without the
        state events that fail, drop the mark and wake the waiters."""
        join = await self._state.get_event(room.join_event_id)
        if join is None:
            raise ValueError("the room's join is gone")
        async with self._completing:
            while True:
                snapshot = await self._state.get_room(room.room_id)
                if snapshot is None:
                    raise ValueError("the room is gone")
                async with snapshot.lock:
                    # Events built before the lock was taken are written first: the
                    # completion rewrites the stored state and reloads the room from it.
                    await self._state.commits_settled(room.room_id)
                    if self._state.is_forgotten(snapshot):
                        # Replaced while we waited (a failed commit): completing this
                        # one would derive the current state without the events the
                        # reloaded one holds. Start again from the reloaded one.
                        continue
                    position = await self._write_completion(room, full, join, snapshot)
                    break
        completed = await self._state.get_room(room.room_id)
        local = completed.joined_on(self._server_name) if completed is not None else ()
        # No await between these: a sync that finds the room complete has a token
        # before this position, so its next sync still shows the room as newly joined.
        for hook in self.completed_hooks:
            try:
                hook(room.room_id)
            except Exception:
                logger.exception("a completion hook failed for %s", room.room_id)
        self._rooms.completed(room.room_id)
        self._on_completed(position, local)
        logger.info("%s has its full state (%d events, from %s)", room.room_id, len(full), server)

    async def _write_completion(
        self,
        room: PartialStateRoom,
        full: Mapping[StateKey, EventID],
        join: StoredEvent,
        snapshot: RoomSnapshot,
    ) -> int:
        """Store the completion over ``snapshot`` (the room's current one, its lock held)
        and drop it from the cache: the completion's stream position."""
        join_group = await self._state.state_group_row(join.state_group)
        since = (
            join_group.prev_group if join_group.prev_group is not None else join_group.state_group
        )
        partial_before = await self._state.state_ids_at_group(since)
        missing = {k: e for k, e in full.items() if k not in partial_before}
        failed = await self._recheck_since(room.room_id, join, missing)
        current, new_group = await self._current_state(snapshot, missing, failed)
        changed = {k: e for k, e in current.items() if snapshot.state.get(k) != e}
        removed = [k for k in snapshot.state if k not in current]
        members = await self._state.get_pdus(
            e for k, e in changed.items() if k[0] == "m.room.member"
        )
        position = await self._store.complete(
            CompletedState(
                room_id=room.room_id,
                since_group=since,
                missing=missing,
                current=[
                    *(
                        (k, e, members[e].membership if e in members else None)
                        for k, e in changed.items()
                    ),
                    *((k, None, None) for k in removed),
                ],
                stream_ordering=join.stream_ordering,
                new_group=new_group,
                failed=failed,
            )
        )
        self.state_rewritten(room.room_id)
        return position

    def state_rewritten(self, room_id: RoomID) -> None:
        """A completion rewrote the room's stored state (here, or in another process of
        a deployment): what is kept of it in memory is read again."""
        self._state.forget_state_deltas()
        self._state.forget_room(room_id)
        for listener in self._rewrite_listeners:
            listener(room_id)

    async def _current_state(
        self,
        snapshot: RoomSnapshot,
        missing: Mapping[StateKey, EventID],
        failed: Mapping[EventID, EventID | None],
    ) -> tuple[dict[StateKey, EventID], NewStateGroup]:
        """The resolution of the states after each forward extremity, with the state the
        join lacked and without the state events that failed the re-check (each replaced
        by what its key held before it), and a new current group holding it. A new group
        even when nothing but the missing state changed: what is kept per current group
        (a sync's room summary, for one) must not outlive the partial state."""
        current = _without_failed({**missing, **snapshot.state}, failed)
        if len(snapshot.extremities) > 1:
            states = [
                _without_failed({**missing, **await self._resolver.state_after(e)}, failed)
                for e in snapshot.extremities
            ]
            current = await self._resolver.resolve(snapshot.room_version, states)
        # The snapshot's group once the completion has rewritten it.
        rewritten = _without_failed({**missing, **snapshot.state}, failed)
        return current, await self._state.group_holding(
            current, [(snapshot.state_group, rewritten)]
        )

    async def _recheck_since(
        self, room_id: RoomID, join: StoredEvent, missing: Mapping[StateKey, EventID]
    ) -> dict[EventID, EventID | None]:
        """Check the events received or sent while the state was partial (received ones
        authorised then against the partial state resolved with their auth events, local
        ones against the partial state) against the full state before them (the state
        after their first prev event with ``missing``), oldest first, as Synapse's
        ``update_state_for_partial_state_event``. The state events that fail, each with
        what its key held before it (None: nothing): they leave the room's state, as
        rejected events do in Synapse; the events stay in the timeline. The auth checks
        run in the executor, a slice at a time."""
        received = await self._events.get_room_events(
            room_id,
            after=join.stream_ordering,
            before=None,
            limit=_MAX_RECHECKED,
            newest_first=False,
        )
        if not received:
            return {}
        prevs = await self._state.get_dag_events(
            p for e in received for p in e.pdu.prev_event_ids[:1]
        )
        by_group: dict[int, set[StateKey]] = {}
        for event in received:
            prev = prevs.get(event.pdu.prev_event_ids[0]) if event.pdu.prev_event_ids else None
            if prev is not None:
                keys = by_group.setdefault(prev.state_group, set())
                keys.update(_auth_keys(event.pdu))
                if event.pdu.is_state():
                    keys.add(event.pdu.state_tuple)  # what a failure reverts it to
        states = {
            g: {**missing, **await self._state.state_ids_at_group(g, sorted(keys))}
            for g, keys in by_group.items()
        }
        pdus = await self._state.get_pdus(e for s in states.values() for e in s.values())
        checks = [
            (event.pdu, states[prev.state_group])
            for event in received
            if event.pdu.prev_event_ids
            and (prev := prevs.get(event.pdu.prev_event_ids[0])) is not None
        ]
        # Pure CPU work, thousands of checks: in the executor, so requests go on.
        failures = await asyncio.get_running_loop().run_in_executor(None, _recheck, checks, pdus)
        failed: dict[EventID, EventID | None] = {}
        for pdu, reason, reverted in failures:
            logger.warning(
                "%s, received while %s was partial, fails against its full state: %s",
                pdu.event_id,
                room_id,
                reason,
            )
            if pdu.is_state():
                failed[pdu.event_id] = reverted
        logger.info("checked %d events received while %s was partial", len(received), room_id)
        return failed


def _recheck(
    checks: Sequence[tuple[Pdu, Mapping[StateKey, EventID]]], pdus: Mapping[EventID, Pdu]
) -> list[tuple[Pdu, str, EventID | None]]:
    """Each event against the state before it, oldest first, without the state events
    failed so far; the failures: the event, why, and what its key held before it. Pure
    CPU work, for the executor."""
    failed: dict[EventID, EventID | None] = {}
    failures: list[tuple[Pdu, str, EventID | None]] = []
    for pdu, state in checks:
        before = _without_failed(state, failed)
        try:
            check_auth_rules(pdu, {k: pdus[e] for k, e in before.items() if e in pdus})
        except AuthError as exc:
            reverted = before.get(pdu.state_tuple) if pdu.is_state() else None
            failures.append((pdu, exc.message, reverted))
            if pdu.is_state():
                failed[pdu.event_id] = reverted
    return failures


def _without_failed(
    state: Mapping[StateKey, EventID], failed: Mapping[EventID, EventID | None]
) -> dict[StateKey, EventID]:
    """``state`` with each failed event replaced by what its key held before it (left
    out where nothing did)."""
    if not failed:
        return dict(state)
    clean: dict[StateKey, EventID] = {}
    for key, event_id in state.items():
        value: EventID | None = event_id
        while value is not None and value in failed:
            value = failed[value]
        if value is not None:
            clean[key] = value
    return clean


def _auth_keys(pdu: Pdu) -> Iterable[StateKey]:
    keys = auth_types_for_event(pdu.room_version, pdu.type, pdu.sender, pdu.state_key, pdu.content)
    keys.add(("m.room.create", ""))
    return keys
