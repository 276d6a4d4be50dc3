"""Long-polls whose client disconnected stop waiting (issue 15), over HTTP on every
backend: GET /sync and the legacy GET /events.

aiohttp cancels no handler when its client goes away, so without this an abandoned
long-poll waited out its timeout and, woken by any change for its user, computed a
response nobody would read. The server logs (at debug level) each poll it abandons.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiohttp
import pytest

from harness.client import Account, MatrixClient, new_session
from harness.rooms import create_room, say
from harness.server import HomeserverProcess, start_homeserver
from harness.sync import LongPoll, sync

POLLS = 4
ABANDON_WITHIN_SECONDS = 10.0


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


async def open_and_drop(base_url: str, path: str, account: Account, params: dict[str, str]) -> None:
    """Start a long-poll on a connection of its own, then close that connection."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        poll = asyncio.create_task(
            session.get(
                f"{base_url}/_matrix/client/v3/{path}",
                params=params,
                headers={"Authorization": f"Bearer {account.access_token}"},
            )
        )
        await asyncio.sleep(1.0)  # the server is waiting on it by now
        done = poll.done()
        poll.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poll
        assert not done, "the long-poll answered before its timeout"


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
