"""RoomOrder: rooms newest first, kept sorted as their positions move."""

from __future__ import annotations

import random

from peyvand.services.sync.sliding.room_order import RoomOrder
from peyvand.types import RoomID

A, B, C, D = RoomID("!a"), RoomID("!b"), RoomID("!c"), RoomID("!d")


def test_newest_first_ties_by_room_id() -> None:
    order = RoomOrder([(A, 1), (B, 3), (C, 3), (D, 2)])
    assert list(order.ids) == [B, C, D, A] and len(order) == 4


def test_a_move_puts_the_room_where_a_sort_would() -> None:
    order = RoomOrder([(A, 1), (B, 3), (C, 3), (D, 2)])
    order.move(A, 1, 4)
    assert list(order.ids) == [A, B, C, D]
    order.move(C, 3, 3)
    assert list(order.ids) == [A, B, C, D]
    order.move(B, 3, 5)
    assert list(order.ids) == [B, A, C, D]


def test_many_moves_agree_with_sorting() -> None:
    rng = random.Random(18)
    rooms = [RoomID(f"!r{i}") for i in range(50)]
    positions = {room: rng.randrange(100) for room in rooms}
    order = RoomOrder(positions.items())
    for step in range(500):
        room = rng.choice(rooms)
        new = 100 + step
        order.move(room, positions[room], new)
        positions[room] = new
    assert list(order.ids) == sorted(rooms, key=lambda r: (-positions[r], r))


def test_merged_adds_and_hides_without_changing_the_held_order() -> None:
    order = RoomOrder([(A, 1), (B, 3), (C, 5)])
    assert order.merged([(D, 4)], frozenset({B})) == [C, D, A]
    assert order.merged([], frozenset()) == [C, B, A]
    assert list(order.ids) == [C, B, A]
