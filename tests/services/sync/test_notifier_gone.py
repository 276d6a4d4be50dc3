"""Waiting long-polls are checked for a gone client by one sweep of the notifier every
``GONE_CHECK_SECONDS``, not by a timer of each poll re-armed every second (issue 18: CPU
of idle long-polls): a gone client's poll ends with ``ClientGone``, the others keep
waiting, and once none waits no sweep stays armed."""

from __future__ import annotations

import asyncio

import pytest

from peyvand.services.sync import notifier as notifier_module
from peyvand.services.sync.notifier import ClientGone, Notifier, abandoned_when
from peyvand.services.sync.streams import Stream, StreamToken

ALICE = "@alice:example.org"
POLLS = 50


class _Client:
    def __init__(self) -> None:
        self.closed = False
        self.checks = 0

    def gone(self) -> bool:
        self.checks += 1
        return self.closed


async def _poll(notifier: Notifier, client: _Client) -> str:
    with abandoned_when(client.gone):
        try:
            await notifier.wait_for_user(ALICE, 10)
        except ClientGone:
            return "gone"
    return "woken"


async def test_one_sweep_ends_the_polls_of_gone_clients_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(notifier_module, "GONE_CHECK_SECONDS", 0.02)
    notifier = Notifier(StreamToken())
    clients = [_Client() for _ in range(POLLS)]
    polls = [asyncio.create_task(_poll(notifier, client)) for client in clients]
    await asyncio.sleep(0.1)
    assert not any(poll.done() for poll in polls)
    sweep = notifier._sweep
    assert sweep is not None
    # About five sweeps so far, each checking every poll once.
    assert all(2 <= client.checks <= 10 for client in clients)

    for client in clients[::2]:
        client.closed = True
    gone = await asyncio.wait_for(asyncio.gather(*polls[::2]), 5)
    assert gone == ["gone"] * len(gone)
    assert not any(poll.done() for poll in polls[1::2])

    notifier.advance(Stream.EVENTS, 1, [ALICE])
    woken = await asyncio.wait_for(asyncio.gather(*polls[1::2]), 5)
    assert woken == ["woken"] * len(woken)
    assert notifier._waiters == {}
    assert notifier._watched == {}
    assert notifier._sweep is None


async def test_a_poll_outside_a_request_is_not_swept() -> None:
    notifier = Notifier(StreamToken())
    waiting = asyncio.create_task(notifier.wait_for_user(ALICE, 0.2))
    await asyncio.sleep(0.05)
    assert notifier._sweep is None
    await asyncio.wait_for(waiting, 5)
    assert notifier._waiters == {}
