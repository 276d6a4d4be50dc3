"""Notifier fan-out to a big audience (issue 15): when the users who can see a change
outnumber those waiting, the waiters are walked instead; either way exactly the waiting
users in the audience wake."""

from __future__ import annotations

from harness.sync import LongPoll
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.streams import Stream, StreamToken

ALICE = "@alice:example.org"
BOB = "@bob:example.org"
AUDIENCE = frozenset({ALICE, *(f"@member{i}:example.org" for i in range(50))})


async def test_a_big_audience_wakes_exactly_its_waiting_members() -> None:
    notifier = Notifier(StreamToken())
    alices = await LongPoll.start(notifier.wait_for_user(ALICE, 10), 10, settle_s=0.05)
    bobs = await LongPoll.start(notifier.wait_for_user(BOB, 10), 10, settle_s=0.05)
    alices.assert_waiting()
    bobs.assert_waiting()

    notifier.advance(Stream.EVENTS, 1, AUDIENCE)  # a set bigger than the waiters

    await alices.woken()
    bobs.assert_waiting()  # not in the audience
    notifier.advance(Stream.EVENTS, 2, [BOB])
    await bobs.woken()
    assert notifier.current_token == StreamToken(events=2)
    assert notifier._waiters == {}


async def test_a_big_audience_with_no_waiting_member_wakes_nobody() -> None:
    notifier = Notifier(StreamToken())
    bobs = await LongPoll.start(notifier.wait_for_user(BOB, 10), 10, settle_s=0.05)
    bobs.assert_waiting()

    notifier.advance(Stream.EVENTS, 1, AUDIENCE - {ALICE})

    bobs.assert_waiting()
    assert notifier.current_token == StreamToken(events=1)
    notifier.advance(Stream.EVENTS, 2, {BOB})
    await bobs.woken()


async def test_audiences_read_in_place_wake_exactly_their_waiting_members() -> None:
    """A room's local members passed as a live set (a dict's keys, as the room snapshot
    keeps them) wake whether the waiters or the members are fewer; users outside every
    audience and outside ``user_ids`` stay waiting."""
    notifier = Notifier(StreamToken())
    carol = "@carol:example.org"
    polls = {
        user: await LongPoll.start(notifier.wait_for_user(user, 10), 10, settle_s=0.05)
        for user in (ALICE, BOB, carol)
    }
    big_room = dict.fromkeys(AUDIENCE)  # more members than waiters: the waiters are walked
    small_room = dict.fromkeys([carol])  # fewer: the members are walked

    notifier.advance(Stream.EVENTS, 1, (), [big_room.keys()])
    await polls[ALICE].woken()
    polls[BOB].assert_waiting()
    polls[carol].assert_waiting()

    notifier.advance(Stream.EVENTS, 2, {BOB}, [small_room.keys(), frozenset()])
    await polls[BOB].woken()
    await polls[carol].woken()
    assert notifier.current_token == StreamToken(events=2)
    assert notifier._waiters == {}
