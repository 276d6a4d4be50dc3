"""``walk_threads``: an event's thread follows its stored relations up to 3 hops counting
its own ("Threaded read receipts"), through events of the same batch or stored ones (read
in one batch per hop); a thread root, a redacted (no relation stored) or unknown parent,
a parent in another room and a longer chain are the main timeline."""

from __future__ import annotations

from collections.abc import Collection

from peyvand.services.timeline.event_thread import MAIN_THREAD, threads_of, walk_threads
from peyvand.storage.relations import StoredRelation
from peyvand.types import EventID, RoomID

ROOM = RoomID("!room:example.org")
ELSEWHERE = RoomID("!elsewhere:example.org")


class Stored:
    """The stored relations the walk may read, and each batch it asked for."""

    def __init__(self, relations: dict[EventID, StoredRelation]) -> None:
        self.relations = relations
        self.reads: list[set[EventID]] = []

    async def __call__(self, event_ids: Collection[EventID]) -> dict[EventID, StoredRelation]:
        wanted = set(event_ids)
        self.reads.append(wanted)
        return {e: self.relations[e] for e in wanted if e in self.relations}


def e(event_id: str) -> EventID:
    return EventID(event_id)


def rel(rel_type: str, parent: str, room: RoomID = ROOM) -> StoredRelation:
    return StoredRelation(room, rel_type, e(parent))


async def test_threads_follow_relations_up_to_three_hops() -> None:
    stored = Stored(
        {
            e("$reply"): rel("m.thread", "$root"),
            e("$root"): StoredRelation(ROOM),
            e("$edit"): rel("m.replace", "$reply"),
            e("$far"): rel("m.reference", "$edit"),
            e("$redacted-reply"): StoredRelation(ROOM),  # a redacted event relates to nothing
            e("$foreign-reply"): rel("m.thread", "$root", ELSEWHERE),
        }
    )
    batch = [
        (e("$new-reply"), rel("m.thread", "$root")),
        (e("$plain"), StoredRelation(ROOM)),
        (e("$reaction"), rel("m.annotation", "$reply")),  # 2 hops through a stored reply
        (e("$on-new"), rel("m.annotation", "$new-reply")),  # its parent is in the batch
        (e("$on-edit"), rel("m.annotation", "$edit")),  # 3 hops
        (e("$on-far"), rel("m.annotation", "$far")),  # 4 hops: too far
        (e("$on-root"), rel("m.annotation", "$root")),  # roots are in the main timeline
        (e("$on-redacted"), rel("m.annotation", "$redacted-reply")),
        (e("$on-unknown"), rel("m.annotation", "$unknown")),
        (e("$on-foreign"), rel("m.annotation", "$foreign-reply")),  # another room's event
    ]
    threads = await threads_of(stored, batch)
    assert threads == {
        e("$new-reply"): "$root",
        e("$plain"): MAIN_THREAD,
        e("$reaction"): "$root",
        e("$on-new"): "$root",
        e("$on-edit"): "$root",
        e("$on-far"): MAIN_THREAD,
        e("$on-root"): MAIN_THREAD,
        e("$on-redacted"): MAIN_THREAD,
        e("$on-unknown"): MAIN_THREAD,
        e("$on-foreign"): MAIN_THREAD,
    }
    # One read for the parents outside the batch; the next hop's were read with it.
    assert stored.reads == [
        {
            e("$reply"),
            e("$edit"),
            e("$far"),
            e("$root"),
            e("$redacted-reply"),
            e("$unknown"),
            e("$foreign-reply"),
        }
    ]


async def test_the_walk_tells_the_events_it_reached() -> None:
    stored = Stored({e("$root"): StoredRelation(ROOM), e("$reply"): rel("m.thread", "$root")})
    walked = await walk_threads(
        stored,
        [(e("$on-root"), rel("m.annotation", "$root")), (e("$edit"), rel("m.replace", "$reply"))],
    )
    assert walked[e("$on-root")].thread == MAIN_THREAD
    assert walked[e("$on-root")].reached == {e("$on-root"), e("$root")}
    assert walked[e("$edit")].thread == "$root"
    assert walked[e("$edit")].reached == {e("$edit"), e("$reply"), e("$root")}
