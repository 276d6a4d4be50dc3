"""``threads_of``: an event's thread follows its relations up to 3 hops counting its
own ("Threaded read receipts"), through events of the same batch or stored ones (read
in one batch per hop); a thread root, a redacted or unknown parent and a longer chain
are the main timeline."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import ROOM_V12
from peyvand.services.timeline.event_thread import MAIN_THREAD, Link, threads_of
from peyvand.storage.models import StoredEvent
from peyvand.types import EventID, RoomID

ROOM = RoomID("!room:example.org")


class Stored:
    """The stored events the walk may read, and each batch it asked for."""

    def __init__(self, events: dict[EventID, StoredEvent]) -> None:
        self.events = events
        self.reads: list[set[EventID]] = []

    async def get_events(self, event_ids: Iterable[EventID]) -> dict[EventID, StoredEvent]:
        wanted = set(event_ids)
        self.reads.append(wanted)
        return {e: self.events[e] for e in wanted if e in self.events}


def stored(event_id: str, link: Link, redacted: bool = False) -> StoredEvent:
    content: dict[str, Any] = {"body": "x"}
    if link is not None:
        content["m.relates_to"] = {"rel_type": link[0], "event_id": link[1]}
    data = {"type": "m.room.message", "sender": "@a:example.org", "room_id": ROOM}
    pdu = Pdu(data | {"content": content}, EventID(event_id), ROOM_V12)
    return StoredEvent(pdu, 1, 1, EventID("$redaction") if redacted else None)


def e(event_id: str) -> EventID:
    return EventID(event_id)


async def test_threads_follow_relations_up_to_three_hops() -> None:
    state = Stored(
        {
            e("$reply"): stored("$reply", ("m.thread", e("$root"))),
            e("$root"): stored("$root", None),
            e("$edit"): stored("$edit", ("m.replace", e("$reply"))),
            e("$far"): stored("$far", ("m.reference", e("$edit"))),
            e("$gone"): stored("$gone", ("m.thread", e("$root")), redacted=True),
        }
    )
    batch: list[tuple[EventID, Link]] = [
        (e("$new-reply"), ("m.thread", e("$root"))),
        (e("$plain"), None),
        (e("$reaction"), ("m.annotation", e("$reply"))),  # 2 hops through a stored reply
        (e("$on-new"), ("m.annotation", e("$new-reply"))),  # its parent is in the batch
        (e("$on-edit"), ("m.annotation", e("$edit"))),  # 3 hops
        (e("$on-far"), ("m.annotation", e("$far"))),  # 4 hops: too far
        (e("$on-root"), ("m.annotation", e("$root"))),  # roots are in the main timeline
        (e("$on-gone"), ("m.annotation", e("$gone"))),  # a redacted parent relates to nothing
        (e("$on-unknown"), ("m.annotation", e("$unknown"))),
    ]
    threads = await threads_of(state, batch)  # type: ignore[arg-type]
    assert threads == {
        e("$new-reply"): "$root",
        e("$plain"): MAIN_THREAD,
        e("$reaction"): "$root",
        e("$on-new"): "$root",
        e("$on-edit"): "$root",
        e("$on-far"): MAIN_THREAD,
        e("$on-root"): MAIN_THREAD,
        e("$on-gone"): MAIN_THREAD,
        e("$on-unknown"): MAIN_THREAD,
    }
    # One read for the parents outside the batch; the next hop's were read with it.
    assert state.reads == [
        {e("$reply"), e("$edit"), e("$far"), e("$root"), e("$gone"), e("$unknown")}
    ]
