"""``rooms.timeline_limits``: one sliding-sync response carries at most a budget of
timeline events over all its rooms, spent in the response's order by what each room
would read; rooms past it get what is left, at least one event (issue 18; the whole
behaviour over HTTP is ``tests/api/sliding_sync/test_sliding_timeline_budget.py``)."""

from __future__ import annotations

from peyvand.services.sync.sliding.request import RoomParams
from peyvand.services.sync.sliding.room_lists import UserRoom
from peyvand.services.sync.sliding.rooms import RoomRequest, timeline_limits
from peyvand.types import RoomID


def asking(room: str, limit: int, membership: str = "join") -> RoomRequest:
    return RoomRequest(
        UserRoom(RoomID(room), membership, 1, 1), RoomParams(frozenset(), limit), None
    )


def asked(request: RoomRequest) -> int:
    return request.params.timeline_limit


def test_rooms_within_the_budget_are_not_cut() -> None:
    assert timeline_limits([asking("!a", 3), asking("!b", 2)], 5, asked) == {}
    assert timeline_limits([asking("!a", 0), asking("!b", 5)], 5, asked) == {}


def test_what_rooms_ask_within_the_budget_reads_nothing_more() -> None:
    def never(request: RoomRequest) -> int:
        raise AssertionError("read")

    assert timeline_limits([asking("!a", 3), asking("!b", 2)], 5, never) == {}


def test_rooms_past_the_budget_get_what_is_left_and_at_least_one() -> None:
    rooms = [asking("!a", 4), asking("!b", 4), asking("!c", 4), asking("!d", 0)]
    assert timeline_limits(rooms, 5, asked) == {RoomID("!b"): 1, RoomID("!c"): 1}
    assert timeline_limits(rooms, 6, asked) == {RoomID("!b"): 2, RoomID("!c"): 1}


def test_rooms_spend_what_they_would_read() -> None:
    rooms = [asking("!a", 4), asking("!b", 4), asking("!c", 4)]
    new_events = {RoomID("!a"): 1, RoomID("!b"): 4, RoomID("!c"): 4}

    def reads(request: RoomRequest) -> int:
        return new_events[request.room.room_id]

    # !a reads its one new event, not the 4 it asks: !b gets its 4, !c the floor.
    assert timeline_limits(rooms, 5, reads) == {RoomID("!c"): 1}


def test_the_budget_is_never_below_the_most_a_room_reads() -> None:
    rooms = [asking("!a", 8), asking("!b", 3)]
    assert timeline_limits(rooms, 5, asked) == {RoomID("!b"): 1}
    assert timeline_limits([asking("!a", 8)], 5, asked) == {}


def test_invites_and_knocks_spend_nothing() -> None:
    rooms = [asking("!i", 4, "invite"), asking("!k", 4, "knock"), asking("!a", 4)]
    assert timeline_limits(rooms, 4, asked) == {}
    rooms = [asking("!i", 9, "invite"), asking("!a", 4), asking("!b", 4)]
    assert timeline_limits(rooms, 5, asked) == {RoomID("!b"): 1}
