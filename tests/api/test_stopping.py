"""Stopping a server (SIGTERM) with a long-polling /sync waiting: the poll is answered
503 at once instead of holding the stop for its timeout, and the server stops cleanly
(its log says so) well within the harness's 20 s before SIGKILL."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from harness.client import MatrixClient, new_session
from harness.server import HomeserverProcess

POLL_TIMEOUT_MS = 60_000
WAIT_SECONDS = 5.0


async def test_a_waiting_long_poll_does_not_hold_the_stop(
    private_homeserver: HomeserverProcess,
) -> None:
    server = private_homeserver
    async with new_session() as session:
        client = MatrixClient(session, server.base_url)
        alice = await client.register()
        since = (await client.request("GET", "sync", token=alice)).ok()["next_batch"]
        poll = asyncio.ensure_future(
            session.get(
                f"{server.base_url}/_matrix/client/v3/sync",
                params={"since": since, "timeout": str(POLL_TIMEOUT_MS)},
                headers={"Authorization": f"Bearer {alice.access_token}"},
                timeout=aiohttp.ClientTimeout(total=POLL_TIMEOUT_MS / 1000 + 10),
            )
        )
        await asyncio.sleep(0.5)  # the poll is waiting
        assert not poll.done()
        started = time.monotonic()
        await asyncio.to_thread(server.stop)
        stopped_in = time.monotonic() - started
        async with asyncio.timeout(WAIT_SECONDS):
            response = await poll
        body = await response.json()
    assert stopped_in < WAIT_SECONDS
    assert (response.status, body["errcode"]) == (503, "M_UNKNOWN")
    log = server.log()
    assert "stopped" in log
    assert "Unhandled error" not in log
