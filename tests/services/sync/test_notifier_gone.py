"""A waiting long-poll learns that its client went away from its connection, the moment
the connection is lost, not by a check of every poll every second (issue 18: CPU of idle
long-polls): a gone client's poll ends with ``ClientGone`` at once, the others keep
waiting, and waiting polls hold no timer but their deadline."""

from __future__ import annotations

import asyncio

from harness.service_fakes import FakeConnection
from peyvand.services.sync.notifier import ClientGone, Notifier, abandoned_when, serve_on
from peyvand.services.sync.streams import Stream, StreamToken

ALICE = "@alice:example.org"
POLLS = 50


async def _poll(notifier: Notifier, connection: FakeConnection, timeout_s: float = 10) -> str:
    """A request's long-poll on ``connection``, as the API's handlers wait."""
    serve_on(connection)
    with abandoned_when(connection.gone):
        try:
            await notifier.wait_for_user(ALICE, timeout_s)
        except ClientGone:
            return "gone"
    return "woken"


def _timers() -> int:
    """How many timers the running loop holds."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, asyncio.BaseEventLoop)
    return sum(not timer.cancelled() for timer in loop._scheduled)  # type: ignore[attr-defined]


async def test_a_lost_connection_ends_its_polls_at_once_and_only_those() -> None:
    notifier = Notifier(StreamToken())
    timers = _timers()
    connections = [FakeConnection() for _ in range(POLLS)]
    polls = [asyncio.create_task(_poll(notifier, connection)) for connection in connections]
    await asyncio.sleep(0.2)
    assert not any(poll.done() for poll in polls)
    # Each poll holds its deadline and nothing else; its client was asked once.
    assert _timers() == timers + POLLS
    assert all(connection.checks == 1 for connection in connections)
    assert all(len(connection.polls) == 1 for connection in connections)

    for connection in connections[::2]:
        connection.lose()
    for _ in range(3):  # the woken polls return within a few steps of the loop, no timer
        await asyncio.sleep(0)
    assert all(poll.done() for poll in polls[::2])
    assert [poll.result() for poll in polls[::2]] == ["gone"] * len(polls[::2])
    assert not any(poll.done() for poll in polls[1::2])
    assert all(connection.checks == 1 for connection in connections)

    notifier.advance(Stream.EVENTS, 1, [ALICE])
    woken = await asyncio.wait_for(asyncio.gather(*polls[1::2]), 5)
    assert woken == ["woken"] * len(woken)
    assert notifier._waiters == {}
    assert all(connection.polls == [] for connection in connections)
    assert _timers() == timers


async def test_a_poll_on_a_lost_connection_ends_at_once() -> None:
    notifier = Notifier(StreamToken())
    connection = FakeConnection()
    connection.lost = True
    assert await asyncio.wait_for(_poll(notifier, connection), 1) == "gone"
    assert connection.checks == 1
    assert notifier._waiters == {}


async def test_a_bound_poll_still_ends_at_its_deadline() -> None:
    notifier = Notifier(StreamToken())
    connection = FakeConnection()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.wait_for(_poll(notifier, connection, 0.2), 5) == "woken"
    assert 0.15 <= loop.time() - started < 2
    assert connection.polls == []
    assert notifier._waiters == {}


async def test_a_poll_outside_abandoned_when_is_not_bound() -> None:
    notifier = Notifier(StreamToken())
    connection = FakeConnection()

    async def poll() -> None:
        serve_on(connection)
        await notifier.wait_for_user(ALICE, 0.5)

    waiting = asyncio.create_task(poll())
    await asyncio.sleep(0.05)
    assert connection.polls == []
    connection.lose()
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await asyncio.wait_for(waiting, 5)
    assert notifier._waiters == {}
