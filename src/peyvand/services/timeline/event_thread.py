"""Which thread an event is in (Client-Server API, "Threading" and "Threaded read
receipts"): an event with an ``m.thread`` relation is in its root's thread; one whose
relations lead, within ``MAX_RELATION_HOPS`` relations counting its own, to an event with
an ``m.thread`` relation is in that event's thread (an edit or a reaction of a thread
reply); every other event, thread roots and what relates to them without ``m.thread``
among them, is in the main timeline, ``MAIN_THREAD``. A relation is the one stored on the
event's row (none for a redacted event, as Synapse drops a redacted event's relations)
and leads nowhere outside the event's room. The push module partitions unread counts
and the read marks of sent events by this ("Receiving notifications": "a maximum of 3
hops"), and receipts check a threaded receipt's event with it; ``services/rooms/threads``
lists threads, which hold only their ``m.thread`` replies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from peyvand.storage.relations import StoredRelation
from peyvand.types import EventID

MAIN_THREAD: Final = "main"
MAX_RELATION_HOPS: Final = 3

RelationLookup = Callable[[Collection[EventID]], Awaitable[Mapping[EventID, StoredRelation]]]
"""The stored relations of events (``RelationStore.relations_of``): a missing one is not
stored here."""


@dataclass(frozen=True, slots=True)
class Walked:
    """An event's thread, and the events whose relations the walk reached (the event and
    every parent named on the way)."""

    thread: str
    reached: frozenset[EventID]


async def walk_threads(
    lookup: RelationLookup, events: Iterable[tuple[EventID, StoredRelation]]
) -> dict[EventID, Walked]:
    """The thread of each of ``events`` (its ID and own relation, in order: an event may
    relate to an earlier one among them), reading the parents it does not have in one
    batch per hop."""
    known: dict[EventID, StoredRelation] = {}
    # event -> (its room, the event whose relation is read next, relations read so far,
    # events reached).
    walking: dict[EventID, tuple[StoredRelation, EventID, int, set[EventID]]] = {}
    for event_id, own in events:
        known[event_id] = own
        walking[event_id] = (own, event_id, 0, {event_id})
    walked: dict[EventID, Walked] = {}
    while walking:
        missing = {at for _, at, _, _ in walking.values() if at not in known}
        if missing:
            known.update(await lookup(missing))
        for event_id, (origin, at, hops, reached) in list(walking.items()):
            relation = known.get(at)
            if relation is None or relation.room_id != origin.room_id or relation.parent_id is None:
                thread = MAIN_THREAD
            else:
                parent = relation.parent_id
                reached.add(parent)
                if relation.rel_type == "m.thread":
                    thread = parent
                elif hops + 1 < MAX_RELATION_HOPS:
                    walking[event_id] = (origin, parent, hops + 1, reached)
                    continue
                else:
                    thread = MAIN_THREAD
            walked[event_id] = Walked(thread, frozenset(reached))
            del walking[event_id]
    return walked


async def threads_of(
    lookup: RelationLookup, events: Iterable[tuple[EventID, StoredRelation]]
) -> dict[EventID, str]:
    """The thread of each of ``events`` (``walk_threads``)."""
    return {event_id: w.thread for event_id, w in (await walk_threads(lookup, events)).items()}
