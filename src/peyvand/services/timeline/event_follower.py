"""Following the events stream written by other processes (issue 21, "Streams across
processes"): a process of a deployment without the ``event_writer`` role (a client
reader) learns of each commit of the writers', reads the new events and invites from
the database and announces them as its own commits are announced (``EventDispatcher``),
so its room index, event caches, recent-events cache and waiting /sync requests move on.

Each writer publishes the position it has released (committed, nothing of its own in
flight below it) on the bus after each commit and records it in ``stream_positions``
(``EventPositionPublisher``); the follower catches up to the lowest of the writers'
positions, in order, one range read at a time. A message lost on the bus only delays
it: positions are re-read from the database every ``POLL_SECONDS`` and after the bus
reconnects.

With several event writers (each allocating in its ``Lane``), every writer also follows
the others: it reads their commits as a reader does and tells its own in position order
among them (``OwnCommits``), once every writer is past them. A writer with nothing in
flight at or below the highest position it heard of the others publishes that one (it
will allocate above it), so a writer that writes less, or is busy higher up, never
holds the stream back; Synapse's
``MultiWriterIdGenerator`` moves an idle writer the same way. Until every writer has
recorded a position (each does when it starts, before it allocates) a follower does
not move: it cannot know where an unheard writer's first position will be.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from peyvand.background import BackgroundTask
from peyvand.events.relations import relation_columns
from peyvand.services.timeline.event_dispatch import EventDispatcher, HeldAnnouncements
from peyvand.services.timeline.room_state import StateService
from peyvand.services.timeline.stream_tracker import EventPositions
from peyvand.storage.bus import Bus
from peyvand.storage.events import EventStore
from peyvand.storage.models import EventToPersist, StateChange, StoredEvent
from peyvand.storage.remote_invites import RemoteInviteStore
from peyvand.storage.stream_positions import StreamPositionStore
from peyvand.types import EventID

# An event's changes to current state: (key, event, membership) each.
_Changes = tuple[StateChange, ...]

logger = logging.getLogger(__name__)

CHANNEL = "events"
STREAM = "events"
# Events read per range read while catching up.
BATCH = 500
# How often positions are re-read from the database (a lost bus message's delay).
POLL_SECONDS = 1.0
# How often, at most, the writer records its position in the database.
RECORD_SECONDS = 0.2


async def followed_position(
    positions: StreamPositionStore, store: EventStore, writers: Sequence[str]
) -> int:
    """Where a process that follows the events stream starts (its notifier, room index
    and ``EventStreamFollower``): the lowest of the ``writers``' recorded positions, each
    committed with nothing of that writer's in flight below it. Not the highest stored
    position: a remote invite, stored in its own transaction, may be there above an
    event still queued in the writer's group commit, which a process starting above it
    would never announce.

    Never above the highest position used (stored, or deleted since by a purge or an
    erasure: ``EventStore.get_max_stream_ordering``). With none recorded, the writer has not yet
    started in this deployment (it records where it starts before it writes anything,
    ``EventPositionPublisher.start``): nothing is in flight and every stored position is
    committed."""
    stored = await store.get_max_stream_ordering()
    recorded = await positions.positions(STREAM)
    known = [recorded[writer] for writer in writers if writer in recorded]
    return min(min(known), stored) if known else stored


class EventPositionPublisher:
    """An event writer's side: publishes each position its dispatcher releases (an
    ``EventDispatcher.advanced`` callback) and records the newest in the database, at
    most every ``RECORD_SECONDS``, one write at a time. One of several writers also
    hears the others' positions, allocates above them and, with nothing in flight below,
    publishes them as its own."""

    def __init__(
        self,
        bus: Bus,
        positions: StreamPositionStore,
        instance: str,
        announced: Callable[[], int],
        tracker: EventPositions,
        store: EventStore,
        writers: Sequence[str],
    ) -> None:
        """``announced``: the position this process's notifier started at (recorded at
        start, before this process writes: ``followed_position``); ``writers``: every
        event writer of the deployment, this one included."""
        self._bus = bus
        self._positions = positions
        self._instance = instance
        self._announced = announced
        self._tracker = tracker
        self._store = store
        self._others = frozenset(writers) - {instance}
        self._newest = 0
        self._recorded = 0
        self._pending = asyncio.Event()
        # Told of each position published (this writer's ``EventStreamFollower``).
        self.published: list[Callable[[int], None]] = []
        self._task = BackgroundTask("events position", self._record)
        self._poll = BackgroundTask("poll writers positions", self._poll_others)

    @property
    def newest(self) -> int:
        """The newest position published."""
        return self._newest

    def advanced(self, position: int) -> None:
        heard = self._tracker.heard_upto
        if self._others and self._tracker.clear_below(heard):
            position = max(position, heard)
        self._publish(position)

    def _publish(self, position: int) -> None:
        if position <= self._newest:
            return
        self._newest = position
        self._bus.publish(CHANNEL, {"p": position})
        self._pending.set()
        for published in self.published:
            published(position)

    def _on_message(self, payload: dict[str, Any], sender: str) -> None:
        position = payload.get("p")
        if sender not in self._others or not isinstance(position, int):
            return
        if payload.get("w") == self._instance:
            # Another writer took this one for absent and moved its position: what is
            # in flight below it is refused at commit (``absent_writers.fence``), and
            # what comes next is allocated above it.
            logger.warning("event writer %s stood in for this one at %d", sender, position)
        self._heard(position)

    def _heard(self, position: int) -> None:
        """Another writer is at ``position`` (a committed one): allocate above it, and
        when nothing at or below it is in flight here, be there too (a writer busy
        above it does not hold the others back either)."""
        self._tracker.heard(position)
        heard = self._tracker.heard_upto
        if self._tracker.clear_below(heard):
            self._publish(heard)

    async def hear_stored(self) -> int:
        """Take the highest position stored for heard (``_heard``): this writer
        allocates above it, and publishes it once nothing below it is in flight here.
        That position."""
        stored = await self._store.get_max_stream_ordering()
        self._heard(stored)
        return stored

    async def start(self) -> None:
        self._newest = max(self._newest, self._announced())
        await self._positions.advance(STREAM, self._instance, self._newest)
        self._recorded = self._newest
        if self._others:
            self._bus.subscribe(CHANNEL, self._on_message)
            # Recorded first: a follower waits for this writer from now on, and has
            # passed nothing above what is stored by now, which this writer allocates
            # above.
            await self.hear_stored()
            self._poll.start()
        self._task.start()

    async def stop(self) -> None:
        await self._poll.stop()
        await self._task.stop()
        if self._newest > self._recorded:
            await self._positions.advance(STREAM, self._instance, self._newest)

    async def _record(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            newest = self._newest
            try:
                await self._positions.advance(STREAM, self._instance, newest)
                self._recorded = newest
            except Exception:
                logger.exception("recording the events position failed")
                self._pending.set()
            await asyncio.sleep(RECORD_SECONDS)

    async def _poll_others(self) -> None:
        """The others' recorded positions, every ``POLL_SECONDS`` (a lost message, or a
        position abandoned here that released nothing to publish)."""
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                recorded = await self._positions.positions(STREAM)
            except Exception:
                logger.exception("reading the events positions failed")
                continue
            others = [p for writer, p in recorded.items() if writer in self._others]
            self._heard(max(others, default=self._tracker.heard_upto))


@dataclass(frozen=True, slots=True)
class OwnCommits:
    """What a follower on one of several event writers does not read back: this
    writer's own positions (its ``tracker``'s lane, above where this run began), told
    from ``held`` in position order among the others' commits."""

    instance: str
    tracker: EventPositions
    held: HeldAnnouncements

    def owns(self, position: int) -> bool:
        return self.tracker.allocated_here(position)

    def skipped(self) -> tuple[int, int, int]:
        """``owns`` as ``EventStore.get_events_in_range``'s ``skip``."""
        tracker = self.tracker
        return (tracker.started_after, tracker.lane.count, tracker.lane.index)


class EventStreamFollower:
    """A reader's side: catches up with the writers' committed events."""

    def __init__(
        self,
        bus: Bus,
        positions: StreamPositionStore,
        store: EventStore,
        remote_invites: RemoteInviteStore,
        state: StateService,
        dispatcher: EventDispatcher,
        start: int,
        *,
        writers: Sequence[str],
        own: OwnCommits | None = None,
    ) -> None:
        """``start``: where this process's notifier and room index started
        (``followed_position``); the follower announces what comes after it, up to the
        lowest position of the ``writers`` (the deployment's event writers). ``own``: on
        one of several writers, its own commits."""
        self._bus = bus
        self._positions = positions
        self._store = store
        self._remote_invites = remote_invites
        self._state = state
        self._dispatcher = dispatcher
        self._position = self._target = start
        self._writers = frozenset(writers)
        self._own = own
        # Each writer's newest position heard (from the bus, the database, or this
        # writer's own publisher).
        self._heard: dict[str, int] = {}
        self._wanted = asyncio.Event()
        # Awaited with each batch read, before it is announced.
        self.before_announce: list[Callable[[Sequence[StoredEvent]], Awaitable[None]]] = []
        self._catch_up = BackgroundTask("follow events", self._follow)
        self._poll = BackgroundTask("poll events positions", self._poll_positions)

    @property
    def position(self) -> int:
        """Up to where this process has announced the stream."""
        return self._position

    async def start(self) -> None:
        self._bus.subscribe(CHANNEL, self._on_message)
        self._bus.on_reconnect(self._reread)
        await self._reread()
        self._catch_up.start()
        self._poll.start()

    async def stop(self) -> None:
        await self._poll.stop()
        await self._catch_up.stop()

    def _on_message(self, payload: dict[str, Any], sender: str) -> None:
        position, writer = payload.get("p"), payload.get("w", sender)
        if not isinstance(position, int) or not isinstance(writer, str):
            return
        if writer != sender:
            # A live writer standing in for an absent one (``absent_writers``); not
            # taken for this writer itself, which publishes its own positions.
            own = self._own
            if sender not in self._writers or (own is not None and writer == own.instance):
                return
        self._note(writer, position)

    def published(self, position: int) -> None:
        """This writer published ``position`` (an ``EventPositionPublisher.published``
        callback: the bus brings a process its own messages late, or not at all)."""
        if self._own is not None:
            self._note(self._own.instance, position)

    def _note(self, writer: str, position: int) -> None:
        """``writer`` is at ``position``: the stream is, up to the lowest writer's."""
        if writer not in self._writers or position <= self._heard.get(writer, position - 1):
            return
        self._heard[writer] = position
        if len(self._heard) < len(self._writers):
            return
        target = min(self._heard.values())
        if target > self._target:
            self._target = target
            self._wanted.set()

    async def _reread(self) -> None:
        for writer, position in (await self._positions.positions(STREAM)).items():
            self._note(writer, position)

    async def _poll_positions(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                await self._reread()
            except Exception:
                logger.exception("reading the events positions failed")

    async def _follow(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            while self._position < self._target:
                try:
                    await self._catch_up_once(self._target)
                except Exception:
                    logger.exception("following the events stream failed; retrying")
                    await asyncio.sleep(POLL_SECONDS)

    async def _catch_up_once(self, target: int) -> None:
        """Read and announce the events after ``position``, up to ``target`` or ``BATCH``
        of them, whichever comes first."""
        own = self._own
        stored = await self._store.get_events_in_range(
            self._position, target, BATCH, skip=None if own is None else own.skipped()
        )
        up_to = target if len(stored) < BATCH else stored[-1].stream_ordering
        invites = await self._remote_invites.changed_in_range(self._position, up_to)
        if own is not None:
            invites = [i for i in invites if not own.owns(i.stream_ordering)]
        changes: dict[EventID, _Changes] = {}
        batch: list[EventToPersist] = []
        if stored:  # a position moved by a writer's commits of its own alone: nothing to read
            changes = await self._state_changes(stored, up_to)
            batch = await self._to_announce(stored, changes)
        rooms = {event.pdu.room_id for event in stored}
        moved = {e.pdu.room_id for e in stored if e.pdu.is_state()}
        moved.update(e.pdu.room_id for e in stored if changes.get(e.pdu.event_id))
        for room_id in moved:
            self._state.forget_room(room_id)
        self._state.cache_events(stored)
        for room_id in rooms:
            await self._state.get_room(room_id)
        for hook in self.before_announce:
            await hook(stored)
        committed_here = own.held.upto(up_to) if own is not None else []
        self._dispatcher.on_replicated(batch, invites, up_to, committed_here)
        if own is not None:
            own.held.drop_upto(up_to)
        self._position = up_to

    async def _state_changes(
        self, stored: list[StoredEvent], up_to: int
    ) -> dict[EventID, _Changes]:
        """What each of ``stored`` changed of its room's current state, from the rows it
        set and the keys it removed (the writer's commit may move current state by more
        or less than the event itself: state resolution at a fork). A state event whose
        position holds no row of its key counts as its own change when a later event, not
        yet followed, replaced or removed it (it was current in between); otherwise it
        never became current."""
        by_position: dict[int, list[StateChange]] = {}
        for key, event_id, membership, position in await self._store.current_state_set_between(
            self._position, up_to
        ):
            by_position.setdefault(position, []).append((key, event_id, membership))
        for key, position in await self._store.current_state_removed_between(self._position, up_to):
            by_position.setdefault(position, []).append((key, None, None))
        # The state events whose own key no row of their position names (a position
        # may name others: resolution at a fork moved or removed them).
        unset = {
            e.pdu.event_id: (e.pdu.room_id, e.pdu.state_tuple)
            for e in stored
            if e.pdu.is_state() and e.pdu.state_key is not None
            and all(k != e.pdu.state_tuple for k, _, _ in by_position.get(e.stream_ordering, ()))
        }  # fmt: skip
        replaced_later: set[EventID] = set()
        if unset:
            positions = await self._store.current_state_positions(unset.values())
            replaced_later = {
                event_id for event_id, key in unset.items() if positions.get(key, 0) > up_to
            }
        changes: dict[EventID, _Changes] = {}
        for event in stored:
            pdu = event.pdu
            own: list[StateChange] = []
            if pdu.event_id in replaced_later:
                membership = pdu.membership if pdu.type == "m.room.member" else None
                own.append((pdu.state_tuple, pdu.event_id, membership))
            changes[pdu.event_id] = (*own, *by_position.get(event.stream_ordering, ()))
        return changes

    async def _to_announce(
        self, stored: list[StoredEvent], changes: dict[EventID, _Changes]
    ) -> list[EventToPersist]:
        """The events as the writer's commit described them, from what storage holds: a
        redaction took effect by its sender's power when storage marked its target
        redacted by it; each event's ``changes`` to current state."""
        targets = [e.pdu.redacts for e in stored if e.pdu.type == "m.room.redaction"]
        redacted = await self._store.get_events([t for t in targets if t is not None])
        replaced = await self._store.get_replaced_state(e.pdu.event_id for e in stored)
        return [
            self._persisted(event, redacted, replaced, changes[event.pdu.event_id])
            for event in stored
        ]

    @staticmethod
    def _persisted(
        event: StoredEvent,
        redacted: dict[EventID, StoredEvent],
        replaced: dict[EventID, EventID | None],
        changes: _Changes,
    ) -> EventToPersist:
        pdu = event.pdu
        relates_to, rel_type = relation_columns(pdu.content)
        target = redacted.get(pdu.redacts) if pdu.redacts is not None else None
        txn = (pdu.sender, event.txn[0], event.txn[1]) if event.txn is not None else None
        return EventToPersist(
            pdu=pdu,
            stream_ordering=event.stream_ordering,
            state_group=event.state_group,
            new_state_group=None,
            txn=txn,
            relates_to=relates_to,
            rel_type=rel_type,
            new_extremities=(),
            redaction_by_power=target is not None and target.redacted_by == pdu.event_id,
            redacted_by=event.redacted_by,
            replaces_state=replaced.get(pdu.event_id),
            current_state_changes=changes,
            current_state_group=event.current_group,
        )
