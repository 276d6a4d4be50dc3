"""A stream message a client reader never got (issue 21): a to-device message sent on the
writer while the reader's bus was not listening reaches the reader's /sync once its bus
listens again (the StreamRelay reads the stream's stored position then), where the
reader's position stayed behind until some later message moved it."""

from __future__ import annotations

import aiohttp

from harness.deployment import Deployment, cut_bus
from harness.nginx import Nginx
from workers.test_reader_caches import Client


async def test_a_to_device_message_missed_by_the_reader_is_synced(
    deployed: tuple[Nginx, Deployment], session: aiohttp.ClientSession
) -> None:
    front, deployment = deployed
    database_url = deployment.database_url
    assert database_url is not None
    alice = Client(session, front.base_url)
    await alice.register("catchup_alice")
    bob = Client(session, front.base_url)
    await bob.register("catchup_bob")
    whoami = await bob.call("GET", "/account/whoami")
    since = (await bob.call("GET", "/sync", worker="reader"))["next_batch"]
    await cut_bus(database_url, "peyvand bus listen reader", allow=False)
    try:
        body = {"messages": {bob.user_id: {whoami["device_id"]: {"n": 1}}}}
        await alice.call("PUT", "/sendToDevice/m.test/catchup1", body, worker="writer")
    finally:
        await cut_bus(database_url, "peyvand bus listen reader", allow=True)
    sync = await bob.call("GET", "/sync", worker="reader", since=since, timeout="8000")
    events = sync.get("to_device", {}).get("events", [])
    assert [event["content"] for event in events] == [{"n": 1}]
