"""A long-poll, however it ends (woken, timed out, its client gone), leaves no reference
cycle behind: what it held (its request, through the ``gone`` check, and its connection)
is freed when it returns, not whenever the cycle collector next reaches its oldest
generation (issue 15, peak memory)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable

from harness.service_fakes import FakeConnection
from peyvand.services.sync.notifier import ClientGone, Notifier, abandoned_when, serve_on
from peyvand.services.sync.streams import Stream, StreamToken

ALICE = "@alice:example.org"


async def _cycles_left(poll: Callable[[FakeConnection], Awaitable[None]]) -> list[str]:
    """Run ``poll`` with the collector off; the kinds of objects of interest that only
    the collector would then have freed."""
    gc.collect()
    gc.disable()
    try:
        await poll(FakeConnection())
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
    finally:
        gc.set_debug(0)
        gc.enable()
    left = [
        type(held).__qualname__
        for held in gc.garbage
        if isinstance(held, (FakeConnection, asyncio.Future, ClientGone))
    ]
    gc.garbage.clear()
    return left


async def test_a_woken_poll_leaves_no_cycle() -> None:
    notifier = Notifier(StreamToken())

    async def poll(request: FakeConnection) -> None:
        serve_on(request)
        with abandoned_when(request.gone):
            waiting = asyncio.create_task(notifier.wait_for_user(ALICE, 10))
            await asyncio.sleep(0.05)
            notifier.advance(Stream.EVENTS, 1, [ALICE])
            await asyncio.wait_for(waiting, 5)

    assert await _cycles_left(poll) == []


async def test_a_timed_out_poll_leaves_no_cycle() -> None:
    notifier = Notifier(StreamToken())

    async def poll(request: FakeConnection) -> None:
        serve_on(request)
        with abandoned_when(request.gone):
            await asyncio.wait_for(notifier.wait_for_user(ALICE, 0.1), 5)

    assert await _cycles_left(poll) == []


async def test_a_poll_whose_client_went_away_leaves_no_cycle() -> None:
    notifier = Notifier(StreamToken())

    answered: list[str] = []

    async def poll(request: FakeConnection) -> None:
        # As the API's handler does: the wait in the handler's own coroutine, ClientGone
        # caught around it; its connection is lost while it waits.
        serve_on(request)
        asyncio.get_running_loop().call_later(0.05, request.lose)
        with abandoned_when(request.gone):
            try:
                await notifier.wait_for_user(ALICE, 5)
            except ClientGone:
                answered.append("gone")

    assert await _cycles_left(poll) == []
    assert answered == ["gone"]
    assert notifier._waiters == {}
