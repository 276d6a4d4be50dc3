"""Long-polls whose client disconnected stop waiting (issue 15), over HTTP on every
backend: GET /sync, the legacy GET /events and sliding sync; and they stop the moment the
connection closes, not at a periodic check of every waiting poll (issue 18: the idle CPU
of a check of 1,000 polls every second), also on a kept-alive connection.

aiohttp cancels no handler when its client goes away, so without this an abandoned
long-poll waited out its timeout and, woken by any change for its user, computed a
response nobody would read. The server logs (at debug level) each poll it abandons.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.client import Account, MatrixClient, new_session
from harness.rooms import create_room, say
from harness.server import HomeserverProcess, start_homeserver
from harness.sliding_sync import SLIDING_SYNC, one_list, sliding
from harness.sync import LongPoll, sync

POLLS = 4
ABANDON_WITHIN_SECONDS = 10.0
DROPS = 4
# How soon after its connection closed a poll must be logged as abandoned: well under
# the second a periodic check would take at worst (and half of it on average).
PROMPTLY_SECONDS = 0.5


@pytest.fixture
def debug_homeserver(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> HomeserverProcess:
    """A server of this test's own, logging at debug level."""
    server = start_homeserver(backend, request, tmp_path, options={"log_level": '"DEBUG"'})
    request.addfinalizer(server.stop)
    return server


def abandoned_in_log(server: HomeserverProcess, account: Account) -> bool:
    """Whether the server logged a long-poll of ``account`` as abandoned."""
    return f"long-poll of {account.user_id} abandoned" in server.log()


async def drop_while_waiting(request: Awaitable[Any]) -> None:
    """Send a long-poll ``request``, and cancel it once the server is waiting on it
    (aiohttp closes the connection of a cancelled request)."""
    poll = asyncio.ensure_future(request)
    await asyncio.sleep(1.0)  # the server is waiting on it by now
    done = poll.done()
    poll.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await poll
    assert not done, "the long-poll answered before its timeout"


async def open_and_drop(base_url: str, path: str, account: Account, params: dict[str, str]) -> None:
    """Start a long-poll on a connection of its own, then close that connection."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        await drop_while_waiting(
            session.get(
                f"{base_url}/_matrix/client/v3/{path}",
                params=params,
                headers={"Authorization": f"Bearer {account.access_token}"},
            )
        )


async def test_dropped_long_polls_stop_waiting(debug_homeserver: HomeserverProcess) -> None:
    server = debug_homeserver
    async with new_session() as session:
        client = MatrixClient(session, server.base_url)
        alice = await client.register()
        room_id = await create_room(client, alice, preset="public_chat")
        syncers = [await client.register() for _ in range(POLLS)]
        watcher = await client.register()
        for account in [*syncers, watcher]:
            await client.request("POST", f"join/{room_id}", json={}, token=account)
        # Offline, so no poll's presence wakes another.
        tokens = [(await sync(client, a, set_presence="offline"))["next_batch"] for a in syncers]
        # Half drop a /sync, half a legacy /events, each meant to wait two minutes.
        drops = [
            open_and_drop(
                server.base_url,
                "sync",
                account,
                {"since": since, "timeout": "120000", "set_presence": "offline"},
            )
            if i % 2 == 0
            else open_and_drop(server.base_url, "events", account, {"timeout": "120000"})
            for i, (account, since) in enumerate(zip(syncers, tokens, strict=True))
        ]
        # One still connected, which must go on waiting and get the next message.
        since = (await sync(client, watcher, set_presence="offline"))["next_batch"]
        live = await LongPoll.start(
            sync(client, watcher, since=since, timeout="60000", set_presence="offline"), 60
        )
        await asyncio.gather(*drops)
        deadline = time.monotonic() + ABANDON_WITHIN_SECONDS
        while not all(abandoned_in_log(server, account) for account in syncers):
            assert time.monotonic() < deadline, "dropped long-polls still waiting"
            await asyncio.sleep(0.1)
        assert not abandoned_in_log(server, watcher)
        live.assert_waiting()
        event_id = await say(client, room_id, alice, "after the drops")
        body = await live.woken()
        timeline = body["rooms"]["join"][room_id]["timeline"]["events"]
        assert event_id in [event["event_id"] for event in timeline]


async def drop_and_time(
    server: HomeserverProcess,
    account: Account,
    method: str,
    path: str,
    params: dict[str, str],
    body: dict[str, Any] | None = None,
) -> float:
    """Start a long-poll on a kept-alive connection of its own that served a request
    first, close that connection while the poll waits, and return how long the server
    took to log the poll as abandoned."""
    connector = aiohttp.TCPConnector(limit=1)
    headers = {"Authorization": f"Bearer {account.access_token}"}
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=600)
    ) as session:
        async with session.get(f"{server.base_url}/_matrix/client/versions") as first:
            assert first.status == 200
            await first.read()
        await drop_while_waiting(
            session.request(
                method, f"{server.base_url}{path}", headers=headers, params=params, json=body
            )
        )
        dropped = time.monotonic()
    while not abandoned_in_log(server, account):
        assert time.monotonic() - dropped < 10, "a dropped long-poll still waits"
        await asyncio.sleep(0.01)
    return time.monotonic() - dropped


async def test_dropped_long_polls_end_at_once(debug_homeserver: HomeserverProcess) -> None:
    server = debug_homeserver
    async with new_session() as session:
        client = MatrixClient(session, server.base_url)
        alice = await client.register()
        room_id = await create_room(client, alice, preset="public_chat")
        syncers = [await client.register() for _ in range(DROPS)]
        watcher = await client.register()
        await client.request("POST", f"join/{room_id}", json={}, token=watcher)
        # One still connected, which must go on waiting and get the next message (sharing
        # no room with the others, so that their presence does not wake it).
        since = (await sync(client, watcher, set_presence="offline"))["next_batch"]
        live = await LongPoll.start(
            sync(client, watcher, since=since, timeout="60000", set_presence="offline"), 60
        )
        delays = []
        for i, account in enumerate(syncers):
            if i % 2 == 0:
                pos = (await sliding(client, account, {"lists": one_list()}))["pos"]
                delay = await drop_and_time(
                    server,
                    account,
                    "POST",
                    SLIDING_SYNC,
                    {"pos": pos, "timeout": "120000"},
                    {"lists": one_list()},
                )
            else:
                token = (await sync(client, account, set_presence="offline"))["next_batch"]
                delay = await drop_and_time(
                    server,
                    account,
                    "GET",
                    "/_matrix/client/v3/sync",
                    {"since": token, "timeout": "120000", "set_presence": "offline"},
                )
            delays.append(delay)
        assert max(delays) < PROMPTLY_SECONDS, delays
        assert not abandoned_in_log(server, watcher)
        live.assert_waiting()
        event_id = await say(client, room_id, alice, "after the drops")
        body = await live.woken()
        timeline = body["rooms"]["join"][room_id]["timeline"]["events"]
        assert event_id in [event["event_id"] for event in timeline]
