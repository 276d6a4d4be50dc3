"""Push delivery that survives outages, on every backend, through a real Sygnal to a
webpush receiver: the gateway gone for a while (Peyvand retries with backoff) and Peyvand
killed with SIGKILL while a push is pending (its progress is durable). Each notification
arrives once, in order."""

from __future__ import annotations

import asyncio

from harness.client import MatrixClient, new_session
from harness.push_setup import push_room, subscribe_through
from harness.rooms import say
from harness.server import HomeserverProcess
from harness.sygnal import SygnalProcess
from harness.webpush import WebPushReceiver

# The outage: a minute. Peyvand's attempts (1 s apart, doubling) come 1, 3, 7, 15,
# 31, 63 and 127 s after the first failure: the one at 63 s finds Sygnal back unless its
# start-up took longer than about 3 s, and the one at 127 s does.
OUTAGE_SECONDS = 60.0
# From the gateway's return to the retried pushes: up to the attempt at 127 s, plus a margin.
RECOVERY_SECONDS = 75.0
DELIVERY_SECONDS = 2.0
# Time for at least one failed attempt while the gateway is down.
FAILED_ATTEMPT_SECONDS = 1.5
# How long duplicates are waited for once everything expected has arrived.
QUIET_SECONDS = 1.5


async def test_pushes_arrive_once_each_after_the_gateway_returns(
    push_client: MatrixClient, sygnal: SygnalProcess, webpush_receiver: WebPushReceiver
) -> None:
    room = await push_room(push_client)
    subscription = await subscribe_through(push_client, room.alice, sygnal, webpush_receiver)
    sygnal.stop()
    try:
        first = await say(push_client, room.room_id, room.bob, "first, while it is down")
        second = await say(push_client, room.room_id, room.bob, "second, while it is down")
        await asyncio.sleep(OUTAGE_SECONDS)
        assert subscription.pushes == []
    finally:
        await sygnal.start()
    await subscription.wait_for(2, RECOVERY_SECONDS)
    # Pushes go out in order: a duplicate of the first two would come before this one.
    after = await say(push_client, room.room_id, room.bob, "back to normal")
    await subscription.wait_for(3, DELIVERY_SECONDS)
    await asyncio.sleep(QUIET_SECONDS)
    assert [push.payload["event_id"] for push in subscription.pushes] == [first, second, after]


async def test_a_pending_push_arrives_once_after_kill_9(
    private_push_homeserver: HomeserverProcess,
    sygnal: SygnalProcess,
    webpush_receiver: WebPushReceiver,
) -> None:
    """The gateway is down when the message is sent, so its push is pending; Peyvand is
    killed (no shutdown code runs), then both come back: the push arrives, once."""
    server = private_push_homeserver
    async with new_session() as session:
        client = MatrixClient(session, server.base_url)
        room = await push_room(client)
        subscription = await subscribe_through(client, room.alice, sygnal, webpush_receiver)
        sygnal.stop()
        try:
            pending = await say(client, room.room_id, room.bob, "sent before the crash")
            await asyncio.sleep(FAILED_ATTEMPT_SECONDS)
            assert subscription.pushes == []
            server.kill()
        finally:
            await sygnal.start()
        # In a thread: the receiver, on this loop, must answer while the server starts.
        await asyncio.to_thread(server.start)
        [push] = await subscription.wait_for(1, RECOVERY_SECONDS)
        assert push.payload["event_id"] == pending
        after = await say(client, room.room_id, room.bob, "sent after the restart")
        await subscription.wait_for(2, DELIVERY_SECONDS)
        await asyncio.sleep(QUIET_SECONDS)
        assert [push.payload["event_id"] for push in subscription.pushes] == [pending, after]
