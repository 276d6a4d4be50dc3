"""The per-room statuses of the room extensions (``sent_rooms``, Synapse's
``HaveSentRoom``): never sent, ``LIVE`` (None) and ``PREVIOUSLY`` (a position)."""

from __future__ import annotations

from peyvand.services.sync.sliding.sent_rooms import advance, live_out_of_view, split
from peyvand.types import RoomID

A, B, C, D = (RoomID(f"!{n}:test") for n in "abcd")


def test_rooms_in_view_split_by_status() -> None:
    parts = split({A, B, C, D}, {A: None, B: 7, D: None}, {D}, first=False)
    assert parts.initial == {C, D} and parts.live == {A} and dict(parts.previously) == {B: 7}
    assert parts.oldest == 7
    assert split({A, B}, {A: None}, set(), first=True).initial == {A, B}


def test_a_live_room_out_of_view_that_changed_is_previously_at_the_last_position() -> None:
    statuses = {A: None, B: None, C: 3}
    assert live_out_of_view(statuses, {A}) == [B]
    after = advance(statuses, {A}, [B, C, D], since=10)
    # B missed changes after 10; C keeps its older position; D was never sent.
    assert after == {A: None, B: 10, C: 3}
    # Back in view, all are up to date.
    assert advance(after, {B, C}, [], since=12) == {A: None, B: None, C: None}


def test_a_live_room_out_of_view_without_changes_stays_live() -> None:
    assert advance({A: None, B: None}, {A}, [], since=10) == {A: None, B: None}
