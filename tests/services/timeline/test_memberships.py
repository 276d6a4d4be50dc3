"""A room snapshot's membership views (joined users, their servers, one server's joined
users) are updated in O(1) per ``set_membership`` (issue 15) and always equal a fresh scan
of the memberships; ``changed_since`` replays exactly the changes made since a sequence
number, or says it no longer can. ``memberships`` keeps the users in the order their
member events were made current (the heroes are the first members), as storage reads
them back: the members one event sets, by user ID."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.services.timeline.room_state import RoomSnapshot
from peyvand.services.timeline.state_resolution import CurrentState
from peyvand.storage.models import StateGroupRow
from peyvand.types import EventID, RoomID, ServerName, UserID, server_name_of

ROOM = RoomID("!room:here.example")
SERVERS = (ServerName("here.example"), ServerName("there.example"), ServerName("far.example"))
USERS = [UserID(f"@u{i}:{s}") for s in SERVERS for i in range(4)]
MEMBERSHIPS = ("join", "leave", "invite", "ban", "knock")

changes = st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from(MEMBERSHIPS)), max_size=60)


def _snapshot(initial: dict[UserID, str]) -> RoomSnapshot:
    return RoomSnapshot(
        ROOM, KNOWN_ROOM_VERSIONS["12"], {}, initial, [], 1, StateGroupRow(1, ROOM, 1, None, None)
    )


def _check(snapshot: RoomSnapshot, model: dict[UserID, str]) -> None:
    assert dict(snapshot.memberships) == model
    joined = {u for u, m in model.items() if m == "join"}
    assert set(snapshot.joined_members()) == joined
    assert len(snapshot.joined_members()) == snapshot.joined_count() == len(joined)
    assert snapshot.joined_servers() == {server_name_of(u) for u in joined}
    for server in SERVERS:
        on = snapshot.joined_on(server)
        assert len(on) == len(set(on))
        assert set(on) == {u for u in joined if server_name_of(u) == server}
        assert snapshot.takes_part(server) == (not joined or server in snapshot.joined_servers())
    for user_id in USERS:
        assert snapshot.is_joined(user_id) == (user_id in joined)


@settings(max_examples=200, deadline=None)
@given(initial=st.dictionaries(st.sampled_from(USERS), st.sampled_from(MEMBERSHIPS)), ops=changes)
def test_views_equal_a_fresh_scan_after_any_changes(
    initial: dict[UserID, str], ops: list[tuple[UserID, str]]
) -> None:
    snapshot = _snapshot(dict(initial))
    model = dict(initial)
    _check(snapshot, model)
    for user_id, membership in ops:
        snapshot.set_membership(user_id, membership)
        model[user_id] = membership
        _check(snapshot, model)


@settings(max_examples=100, deadline=None)
@given(before=changes, after=changes)
def test_changed_since_replays_the_changes_after_a_sequence_number(
    before: list[tuple[UserID, str]], after: list[tuple[UserID, str]]
) -> None:
    snapshot = _snapshot({})
    for user_id, membership in before:
        snapshot.set_membership(user_id, membership)
    seq = snapshot.membership_seq
    assert snapshot.changed_since(seq) == []
    for user_id, membership in after:
        snapshot.set_membership(user_id, membership)
    assert snapshot.changed_since(seq) == [u for u, _ in after]
    assert snapshot.changed_since(snapshot.membership_seq + 1) is None


def test_changed_since_gives_up_beyond_its_journal() -> None:
    snapshot = _snapshot({})
    for i in range(5000):
        snapshot.set_membership(USERS[i % len(USERS)], "join")
    assert snapshot.changed_since(0) is None
    assert snapshot.changed_since(snapshot.membership_seq - 3) == [
        USERS[i % len(USERS)] for i in range(4997, 5000)
    ]


@settings(max_examples=100, deadline=None)
@given(ops=changes)
def test_memberships_are_in_the_order_they_were_made_current(
    ops: list[tuple[UserID, str]],
) -> None:
    snapshot = _snapshot({})
    order: list[UserID] = []
    for user_id, membership in ops:
        snapshot.set_membership(user_id, membership)
        order = [u for u in order if u != user_id] + [user_id]
    assert list(snapshot.memberships) == order


def test_the_members_one_event_sets_are_ordered_by_user_id() -> None:
    first, *others = sorted(USERS[:4])
    snapshot = _snapshot({first: "join"})
    row = StateGroupRow(2, ROOM, 2, None, None)
    changes = tuple(
        (("m.room.member", u), EventID(f"$e{i}"), "join") for i, u in enumerate(reversed(others))
    )
    CurrentState([EventID("$e")], row, None, changes).move(snapshot, 2)
    assert list(snapshot.memberships) == [first, *others]
