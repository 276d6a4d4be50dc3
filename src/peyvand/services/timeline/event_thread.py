"""Which thread an event is in (Client-Server API, "Threading" and "Threaded read
receipts"): an event with an ``m.thread`` relation is in its root's thread; one whose
relations lead, within ``MAX_RELATION_HOPS`` relations counting its own, to an event with
an ``m.thread`` relation is in that event's thread (an edit or a reaction of a thread
reply); every other event, thread roots and what relates to them without ``m.thread``
among them, is in the main timeline, ``MAIN_THREAD``. The push module partitions unread
counts and the read marks of sent events by this ("Receiving notifications": "a maximum
of 3 hops"), as receipts check a threaded receipt's event; ``services/rooms/threads``
lists threads, which hold only their ``m.thread`` replies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from peyvand.events.relations import relation_in
from peyvand.services.timeline.room_state import StateService
from peyvand.types import EventID

MAIN_THREAD: Final = "main"
MAX_RELATION_HOPS: Final = 3

# An event's relation as the walk reads it: (rel_type, parent), or None.
Link = tuple[str, EventID] | None


async def threads_of(
    state: StateService, events: Iterable[tuple[EventID, Link]]
) -> dict[EventID, str]:
    """The thread of each of ``events`` (its ID and own relation, in order: an event may
    relate to an earlier one among them), reading the parents it does not have in one
    batch per hop."""
    links: dict[EventID, Link] = {}
    # event -> the event whose relation is read next, and the relations read so far.
    walking: dict[EventID, tuple[EventID, int]] = {}
    for event_id, link in events:
        links[event_id] = link
        walking[event_id] = (event_id, 0)
    threads: dict[EventID, str] = {}
    while walking:
        missing = {at for at, _ in walking.values() if at not in links}
        if missing:
            loaded = await state.get_events(missing)
            for event_id in missing:
                stored = loaded.get(event_id)
                relation = None
                if stored is not None and stored.redacted_by is None:
                    relation = relation_in(stored.pdu.content)
                links[event_id] = None if relation is None else relation[:2]
        for event_id, (at, hops) in list(walking.items()):
            link = links[at]
            if link is not None and link[0] == "m.thread":
                threads[event_id] = link[1]
            elif link is None or hops + 1 == MAX_RELATION_HOPS:
                threads[event_id] = MAIN_THREAD
            else:
                walking[event_id] = (link[1], hops + 1)
                continue
            del walking[event_id]
    return threads
