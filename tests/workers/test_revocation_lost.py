"""A token revocation whose bus message is lost on the writer's side (issue 21): the
writer's sending connection dies under the message. The logout answers only once the
message went out again (or the reader's copy of the token expired), and the reader
refuses the token right after; it answered with its cached copy before, indefinitely."""

from __future__ import annotations

import asyncio

import aiohttp

from harness.deployment import Deployment, cut_bus
from harness.nginx import Nginx
from workers.test_reader_caches import Client


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
    await cut_bus(database_url, "peyvand bus send writer", allow=False)
    try:
        logout = asyncio.ensure_future(alice.call("POST", "/logout", {}, worker="writer"))
        await asyncio.sleep(1.5)
    finally:
        await cut_bus(database_url, "peyvand bus send writer", allow=True)
    await asyncio.wait_for(logout, 10.0)
    refused = await alice.call("GET", "/account/whoami", status=401, worker="reader")
    assert refused["errcode"] == "M_UNKNOWN_TOKEN"
