"""A token revocation whose bus message is lost on the writer's side (issue 21): the
writer's sending connection dies under the message. The logout answers only once the
message went out again (or the reader's copy of the token expired), and the reader
refuses the token right after; it answered with its cached copy before, indefinitely."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from harness.deployment import Deployment
from harness.nginx import Nginx
from workers.test_reader_caches import Client


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


async def _cut_sending(database_url: str, worker: str, allow: bool) -> None:
    """Kill ``worker``'s bus sending connection and refuse new connections to the
    database (``allow`` false), or let them in again."""
    url = urlsplit(database_url)
    name = url.path.lstrip("/")
    conn = await asyncpg.connect(urlunsplit(url._replace(path="/postgres")))
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND application_name = $2",
                name,
                f"peyvand bus send {worker}",
            )
    finally:
        await conn.close()


async def test_a_revocation_lost_on_the_writer_still_reaches_the_reader(
    deployed: tuple[Nginx, Deployment], session: aiohttp.ClientSession
) -> None:
    front, deployment = deployed
    database_url = deployment.database_url
    assert database_url is not None
    alice = Client(session, front.base_url)
    await alice.register("lost_alice")
    for _ in range(3):  # cached on the reader
        await alice.call("GET", "/account/whoami", worker="reader")
    await _cut_sending(database_url, "writer", allow=False)
    try:
        logout = asyncio.ensure_future(alice.call("POST", "/logout", {}, worker="writer"))
        await asyncio.sleep(1.5)
    finally:
        await _cut_sending(database_url, "writer", allow=True)
    await asyncio.wait_for(logout, 10.0)
    refused = await alice.call("GET", "/account/whoami", status=401, worker="reader")
    assert refused["errcode"] == "M_UNKNOWN_TOKEN"
