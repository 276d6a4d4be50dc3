"""The connection store of sliding sync (MSC4186 ``pos``), in memory and bounded: which
positions a request keeps, and what an evicted or foreign ``pos`` is answered."""

from __future__ import annotations

import pytest

from peyvand.errors import MatrixError
from peyvand.services.sync.sliding.connections import (
    ConnectionPosition,
    ConnectionStore,
    Pos,
    SentRoom,
)
from peyvand.services.sync.streams import StreamToken
from peyvand.types import DeviceID, RoomID, UserID

ALICE = (UserID("@alice:test"), DeviceID("PHONE"), "main")
BOB = (UserID("@bob:test"), DeviceID("PHONE"), "main")


def sent(position: int) -> SentRoom:
    return SentRoom(position, "join", frozenset(), {}, None, None, (), 1)


def test_a_request_keeps_its_own_position_and_the_new_one() -> None:
    store = ConnectionStore()
    store.start(ALICE)
    first = store.record(ALICE, None, ConnectionPosition({RoomID("!a:test"): sent(1)}, {}))
    second = store.record(ALICE, first, ConnectionPosition({RoomID("!a:test"): sent(2)}, {}))
    # A retry of ``first`` (the answer ``second`` was lost) finds it; ``second`` goes.
    assert store.resume(ALICE, first).rooms[RoomID("!a:test")].position == 1
    with pytest.raises(MatrixError) as raised:
        store.resume(ALICE, second)
    assert raised.value.errcode == "M_UNKNOWN_POS"


def test_an_abandoned_long_poll_keeps_the_newer_position() -> None:
    """The client gave up a long-poll from P1 and asked again from P1 (answered P2,
    then asked from P2); the abandoned poll's late answer (P3, from P1) must not drop
    P2: only a request that uses a position drops the others, as in Synapse."""
    store = ConnectionStore()
    first = store.record(ALICE, None, ConnectionPosition({}, {}))
    store.resume(ALICE, first)  # the long-poll, still waiting
    store.resume(ALICE, first)  # the client's next request
    second = store.record(ALICE, first, ConnectionPosition({RoomID("!a:test"): sent(2)}, {}))
    late = store.record(ALICE, first, ConnectionPosition({RoomID("!a:test"): sent(3)}, {}))
    assert store.resume(ALICE, second).rooms[RoomID("!a:test")].position == 2
    with pytest.raises(MatrixError):
        store.resume(ALICE, late)


def test_positions_never_used_are_bounded() -> None:
    store = ConnectionStore()
    first = store.record(ALICE, None, ConnectionPosition({}, {}))
    for _ in range(30):
        store.record(ALICE, first, ConnectionPosition({}, {}))
    store.resume(ALICE, first)  # the base of them all stays
    store = ConnectionStore()
    first = store.record(ALICE, None, ConnectionPosition({}, {}))
    numbers = [store.record(ALICE, first, ConnectionPosition({}, {})) for _ in range(30)]
    store.resume(ALICE, numbers[-1])
    with pytest.raises(MatrixError):
        store.resume(ALICE, numbers[0])


def test_a_position_of_another_connection_is_unknown() -> None:
    store = ConnectionStore()
    number = store.record(ALICE, None, ConnectionPosition({}, {}))
    with pytest.raises(MatrixError):
        store.resume(BOB, number)


def test_the_least_recently_used_connection_is_evicted() -> None:
    store = ConnectionStore(max_connections=1)
    alice = store.record(ALICE, None, ConnectionPosition({}, {}))
    store.record(BOB, None, ConnectionPosition({}, {}))
    with pytest.raises(MatrixError) as raised:
        store.resume(ALICE, alice)
    assert raised.value.errcode == "M_UNKNOWN_POS"


def test_one_user_opening_connection_after_connection_evicts_only_their_own() -> None:
    """10,000 ``conn_id``s of one device neither push out other users' connections nor
    hold more than the per-user bound."""
    store = ConnectionStore(max_connections=1_000, max_per_user=50)
    bob = store.record(BOB, None, ConnectionPosition({}, {}))
    mallory = UserID("@mallory:test")
    numbers = [
        store.record((mallory, DeviceID("D"), f"c{i}"), None, ConnectionPosition({}, {}))
        for i in range(10_000)
    ]
    assert len(store) == 51
    assert store.resume(BOB, bob).rooms == {}
    # The most recent of the user's connections are kept, the older ones are unknown.
    assert store.resume((mallory, DeviceID("D"), "c9999"), numbers[-1]).rooms == {}
    with pytest.raises(MatrixError):
        store.resume((mallory, DeviceID("D"), "c0"), numbers[0])


def test_the_total_bound_evicts_the_least_recently_active_user_first() -> None:
    store = ConnectionStore(max_connections=3, max_per_user=3)
    users = [(UserID(f"@u{i}:test"), DeviceID("D"), "main") for i in range(3)]
    numbers = [store.record(key, None, ConnectionPosition({}, {})) for key in users]
    store.resume(users[0], numbers[0])  # u0 active again: u1 is now the oldest
    store.record(ALICE, None, ConnectionPosition({}, {}))
    assert len(store) == 3
    with pytest.raises(MatrixError):
        store.resume(users[1], numbers[1])
    store.resume(users[0], numbers[0])
    store.resume(users[2], numbers[2])


def test_a_new_connection_forgets_the_old_positions() -> None:
    store = ConnectionStore()
    number = store.record(ALICE, None, ConnectionPosition({}, {}))
    assert store.start(ALICE).rooms == {}
    with pytest.raises(MatrixError):
        store.resume(ALICE, number)


@pytest.mark.parametrize("text", ["", "1", "x/s1", "1/t5", "-1/s1", "1/s" + "_".join(["1"] * 9)])
def test_a_malformed_pos_is_unknown(text: str) -> None:
    with pytest.raises(MatrixError) as raised:
        Pos.parse(text)
    assert raised.value.errcode == "M_UNKNOWN_POS"


def test_a_pos_round_trips() -> None:
    pos = Pos(7, StreamToken(events=5, typing=2))
    assert Pos.parse(pos.serialize()) == pos


def test_only_the_rooms_a_response_answered_are_looked_at() -> None:
    store = ConnectionStore()
    a, b, c = RoomID("!a:test"), RoomID("!b:test"), RoomID("!c:test")
    first = store.record(ALICE, None, ConnectionPosition({a: sent(1), b: sent(1)}, {}))
    held = store.resume(ALICE, first)
    # Another connection answered at the same position holds equal rooms: shared.
    other = store.record(BOB, None, ConnectionPosition({c: sent(2)}, {}))
    # b equal to what ALICE holds but not the same object: not looked at, as not answered.
    answered = {a: held.rooms[a], b: sent(1), c: sent(2)}
    second = store.record(ALICE, first, ConnectionPosition(answered, {}), changed=[c])
    now = store.resume(ALICE, second)
    assert now.rooms == answered
    assert now.rooms[a] is held.rooms[a]
    # (looked at, it would have been swapped for the equal one held)
    assert now.rooms[b] is answered[b] and now.rooms[b] is not held.rooms[b]
    assert now.rooms[c] is store.resume(BOB, other).rooms[c]
