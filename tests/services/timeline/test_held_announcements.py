"""HeldAnnouncements (issue 21, several event writers): a writer's released commits are
told once every writer passed them, in position order; a batch whose events lie on both
sides of the bound is told in part, so no event is told after a token above it."""

from __future__ import annotations

from peyvand.events.pdu import Pdu
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.services.timeline.event_dispatch import HeldAnnouncements, OwnCommit
from peyvand.storage.models import EventToPersist
from peyvand.types import EventID, RoomID, UserID

ROOM = RoomID("!room:test")
BOB = UserID("@bob:test")


def event(position: int) -> EventToPersist:
    pdu = Pdu({"type": "m.room.message", "room_id": ROOM}, EventID(f"$e{position}"),
              KNOWN_ROOM_VERSIONS["11"])  # fmt: skip
    return EventToPersist(pdu, position, 1, None, None, None, None, ())


def told(commits: list[OwnCommit]) -> list[tuple[int, list[int]]]:
    return [(c.position, [e.stream_ordering for e in c.batch]) for c in commits]


def test_a_batch_across_the_bound_is_told_in_part_and_the_rest_later() -> None:
    held = HeldAnnouncements()
    held.hold(OwnCommit(16, [event(p) for p in (10, 12, 14, 16)]))
    held.hold(OwnCommit(17, membership=(BOB, ROOM, "invite")))
    held.hold(OwnCommit(20, [event(18), event(20)]))
    assert held.upto(9) == []
    assert told(held.upto(11)) == [(11, [10])]
    assert told(held.upto(11)) == [(11, [10])]  # nothing is taken off by looking
    held.drop_upto(11)
    assert told(held.upto(15)) == [(15, [12, 14])]
    held.drop_upto(15)
    assert told(held.upto(18)) == [(16, [16]), (17, []), (18, [18])]
    held.drop_upto(18)
    assert len(held) == 1
    assert told(held.upto(25)) == [(20, [20])]
    held.drop_upto(25)
    assert len(held) == 0
