"""RoomOwners (issue 21, several event writers): every room has one writer, the one
nginx computes from the same characters (``shard_characters``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from peyvand.services.timeline.room_owners import RoomOwners, shard_characters, shard_of
from peyvand.types import RoomID


@given(st.integers(1, 6), st.text(min_size=0, max_size=20))
def test_a_room_is_in_the_shard_whose_characters_start_it(count: int, opaque: str) -> None:
    room_id = "!" + opaque
    index = shard_of(room_id, count)
    assert 0 <= index < count
    starts = [i for i in range(count) if opaque[:1] and opaque[0] in shard_characters(i, count)]
    # A printable ASCII first character is in exactly one shard's list; any other (or
    # none) is the first writer's, nginx's default.
    assert starts == [index] or (starts == [] and index == 0)


def test_the_shards_split_the_printable_characters() -> None:
    shards = [shard_characters(i, 2) for i in range(2)]
    assert sorted("".join(shards)) == [chr(c) for c in range(0x21, 0x7F)]
    assert abs(len(shards[0]) - len(shards[1])) <= 1
    owners = RoomOwners(("w1", "w2"))
    assert {owners.owner(RoomID(f"!{c}x:example.org")) for c in shards[1]} == {"w2"}
    assert owners.owner(RoomID("!")) == "w1"
    assert owners.owner(RoomID("!éx")) == "w1"
