"""Push notifications through a real gateway, on every backend: Peyvand -> Sygnal (its
webpush app) -> a browser push service on loopback, which decrypts what arrives (the path
a phone's or browser's push takes). Push Gateway API, ``POST /_matrix/push/v1/notify``;
Client-Server API, "Push Notifications"."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from harness.client import MatrixClient
from harness.gateway_tap import NotifyTap
from harness.push_setup import (
    ROOM_NAME,
    push_room,
    read_up_to,
    set_pusher,
    subscribe_through,
    wait_for_no_pushers,
)
from harness.rooms import say
from harness.sygnal import SygnalProcess
from harness.webpush import WebPushReceiver

# The bound from a message to the push service.
DELIVERY_SECONDS = 2.0
# How long a push that must not come is waited for (a later one proves the pipe flows).
QUIET_SECONDS = 1.5


async def test_a_message_reaches_the_push_service_with_its_content(
    push_client: MatrixClient, sygnal: SygnalProcess, webpush_receiver: WebPushReceiver
) -> None:
    room = await push_room(push_client)
    subscription = await subscribe_through(push_client, room.alice, sygnal, webpush_receiver)
    event_id = await say(push_client, room.room_id, room.bob, "are you there?")
    [push] = await subscription.wait_for(1, DELIVERY_SECONDS)
    payload = push.payload
    assert payload["event_id"] == event_id
    assert payload["room_id"] == room.room_id
    assert payload["type"] == "m.room.message"
    assert payload["sender"] == room.bob.user_id
    assert payload["room_name"] == ROOM_NAME
    assert payload["content"]["body"] == "are you there?"
    assert payload["unread"] == 1
    # A one-to-one room's message makes a sound: high priority, the Urgency "normal".
    assert push.urgency == "normal"
    assert push.vapid_key == sygnal.application_server_key
    second = await say(push_client, room.room_id, room.bob, "hello?")
    _, push = await subscription.wait_for(2, DELIVERY_SECONDS)
    # The badge counts rooms with unread notifications (Synapse's default), still one.
    assert (push.payload["event_id"], push.payload["unread"]) == (second, 1)
    assert webpush_receiver.errors == []


async def test_event_id_only_sends_no_content(
    push_client: MatrixClient, sygnal: SygnalProcess, webpush_receiver: WebPushReceiver
) -> None:
    room = await push_room(push_client)
    subscription = await subscribe_through(
        push_client, room.alice, sygnal, webpush_receiver, data={"format": "event_id_only"}
    )
    event_id = await say(push_client, room.room_id, room.bob, "a secret")
    [push] = await subscription.wait_for(1, DELIVERY_SECONDS)
    assert push.payload == {"event_id": event_id, "room_id": room.room_id, "unread": 1}


async def test_a_muted_room_sends_nothing(
    push_client: MatrixClient, sygnal: SygnalProcess, webpush_receiver: WebPushReceiver
) -> None:
    room = await push_room(push_client)
    subscription = await subscribe_through(push_client, room.alice, sygnal, webpush_receiver)
    mute = f"pushrules/global/room/{quote(room.room_id)}"
    (await push_client.request("PUT", mute, json={"actions": []}, token=room.alice)).ok()
    await say(push_client, room.room_id, room.bob, "nobody hears this")
    await asyncio.sleep(QUIET_SECONDS)
    assert subscription.pushes == []
    # The pusher still works: a message in another room arrives, and only it.
    other = await push_room(push_client)
    (
        await push_client.request("POST", f"join/{quote(other.room_id)}", json={}, token=room.alice)
    ).ok()
    event_id = await say(push_client, other.room_id, other.bob, "but this is heard")
    await asyncio.sleep(QUIET_SECONDS)
    assert [push.payload["event_id"] for push in subscription.pushes] == [event_id]


async def test_a_mention_is_high_priority_with_highlight(
    push_client: MatrixClient,
    sygnal: SygnalProcess,
    gateway_tap: NotifyTap,
    webpush_receiver: WebPushReceiver,
) -> None:
    """In a room of three a plain message is low priority (webpush Urgency "low"); a
    mention is high ("normal", webpush has no higher one Sygnal uses) with the highlight
    tweak, which only the gateway sees."""
    room = await push_room(push_client, others=1)
    subscription = await subscribe_through(
        push_client, room.alice, sygnal, webpush_receiver, data={"url": gateway_tap.url}
    )
    plain = await say(push_client, room.room_id, room.bob, "just chatting")
    mention = await say(
        push_client,
        room.room_id,
        room.bob,
        f"{room.alice.user_id}: look",
        **{"m.mentions": {"user_ids": [room.alice.user_id]}},
    )
    first, second = await subscription.wait_for(2, DELIVERY_SECONDS * 2)
    assert (first.payload["event_id"], first.urgency) == (plain, "low")
    assert (second.payload["event_id"], second.urgency) == (mention, "normal")
    sent = await gateway_tap.notifications_for(subscription.p256dh, 2, DELIVERY_SECONDS)
    assert [n["prio"] for n in sent] == ["low", "high"]
    assert not sent[0]["devices"][0].get("tweaks", {}).get("highlight")
    assert sent[1]["devices"][0]["tweaks"]["highlight"] is True


async def test_a_read_receipt_sends_a_counts_only_update(
    push_client: MatrixClient, sygnal: SygnalProcess, webpush_receiver: WebPushReceiver
) -> None:
    room = await push_room(push_client)
    subscription = await subscribe_through(push_client, room.alice, sygnal, webpush_receiver)
    await say(push_client, room.room_id, room.bob, "one")
    last = await say(push_client, room.room_id, room.bob, "two")
    await subscription.wait_for(2, DELIVERY_SECONDS)
    await read_up_to(push_client, room.alice, room.room_id, last)
    _, _, badge = await subscription.wait_for(3, DELIVERY_SECONDS)
    assert badge.payload == {"unread": 0}


async def test_an_expired_subscription_deletes_the_pusher(
    push_client: MatrixClient, sygnal: SygnalProcess, webpush_receiver: WebPushReceiver
) -> None:
    """The push service answers 410 Gone, Sygnal reports the pushkey rejected, and Peyvand
    deletes the pusher."""
    room = await push_room(push_client)
    subscription = webpush_receiver.subscribe()
    subscription.status = 410
    await set_pusher(push_client, room.alice, sygnal.pusher(subscription))
    await say(push_client, room.room_id, room.bob, "anyone?")
    await wait_for_no_pushers(push_client, room.alice, within=10.0)
    assert subscription.pushes == []
