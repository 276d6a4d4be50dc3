"""Notifier: a waiting long-poll wakes at once for a change its user can see, not for
anybody else's; it ends at its timeout otherwise; no waiter stays behind (DESIGN.md, "Sync")."""

from __future__ import annotations

import asyncio
import time

from harness.sync import LongPoll
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.streams import Stream, StreamToken

ALICE = "@alice:example.org"
BOB = "@bob:example.org"


async def test_a_change_for_the_user_wakes_every_waiting_poll_of_theirs_at_once() -> None:
    notifier = Notifier(StreamToken())
    polls = [
        await LongPoll.start(notifier.wait_for_user(ALICE, 10), 10, settle_s=0.05) for _ in range(2)
    ]
    bobs = await LongPoll.start(notifier.wait_for_user(BOB, 10), 10, settle_s=0.05)
    for poll in polls:
        poll.assert_waiting()
    bobs.assert_waiting()

    notifier.advance(Stream.TYPING, 3, [ALICE])

    for poll in polls:
        await poll.woken()
    assert notifier.current_token == StreamToken(typing=3)
    bobs.assert_waiting()  # Alice's change is not Bob's
    notifier.advance(Stream.EVENTS, 1, [BOB])
    await bobs.woken()
    assert notifier.current_token == StreamToken(events=1, typing=3)
    assert notifier._waiters == {}


async def test_a_change_for_others_does_not_wake_it_and_it_ends_at_its_timeout() -> None:
    notifier = Notifier(StreamToken())
    started = time.monotonic()
    waiting = asyncio.create_task(notifier.wait_for_user(ALICE, 0.5))
    await asyncio.sleep(0.05)
    notifier.advance(Stream.EVENTS, 1, [BOB])
    notifier.advance(Stream.RECEIPTS, 2, [])
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - started >= 0.45
    assert notifier._waiters == {}


async def test_an_older_position_never_moves_the_token_back() -> None:
    notifier = Notifier(StreamToken(events=5))
    poll = await LongPoll.start(notifier.wait_for_user(ALICE, 10), 10, settle_s=0.05)
    poll.assert_waiting()
    notifier.advance(Stream.EVENTS, 4, [ALICE])
    await poll.woken()
    assert notifier.current_token == StreamToken(events=5)
