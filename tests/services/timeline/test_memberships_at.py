"""A sync goes by the user's memberships as of its token (``RoomIndex.memberships_at``):
a membership stored past the token (a member event of a room joined long ago, which a
deployment's reader has not followed yet, or which a lazily loaded index read from the
database) is read as it was at the token, so the room stays in the sync; a room the
user was not in at the token is left out. Over the real storage of both backends (the
``world`` of the stream-order tests)."""

from __future__ import annotations

from peyvand.services.timeline.event_creation import EventSpec
from peyvand.services.timeline.room_index import RoomIndex
from services.federation.test_invite_stream_order import ALICE, World, world

__all__ = ["world"]


async def test_memberships_are_read_as_of_the_token(world: World) -> None:
    before_room = world.notifier.current_token.events
    room_id = await world.room()
    joined_at = world.notifier.current_token.events
    renamed = await world.events.send(
        room_id,
        ALICE,
        EventSpec("m.room.member", {"membership": "join", "displayname": "A"}, ALICE),
    )
    assert renamed.stream_ordering > joined_at

    # A process whose index is loaded now (a reader behind the writer, a restart) sees
    # the newest membership, stored past a token handed out before the rename.
    index = RoomIndex(world.store, world.invites)
    await index.start()
    assert (await index.memberships(ALICE))[room_id] == ("join", renamed.stream_ordering)
    assert (await index.memberships_at(ALICE, joined_at))[room_id][0] == "join"
    assert (await index.memberships_at(ALICE, joined_at))[room_id][1] <= joined_at
    assert room_id not in await index.memberships_at(ALICE, before_room)
    at_rename = await index.memberships_at(ALICE, renamed.stream_ordering)
    assert at_rename[room_id] == ("join", renamed.stream_ordering)
    # What the index keeps is not changed by asking.
    assert (await index.memberships(ALICE))[room_id] == ("join", renamed.stream_ordering)
