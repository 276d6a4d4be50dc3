"""The push test harness itself, without Peyvand: a notification posted to Sygnal (Push
Gateway API, ``POST /_matrix/push/v1/notify``) reaches the webpush receiver, decrypted,
with Sygnal's urgency, TTL and VAPID key; an expired subscription is reported rejected,
a failing push service is not."""

from __future__ import annotations

from typing import Any

import aiohttp

from harness.sygnal import WEBPUSH_APP_ID, WEBPUSH_TTL_SECONDS, SygnalProcess
from harness.webpush import WebPushReceiver, WebPushSubscription

WAIT_SECONDS = 5.0


def notification(subscription: WebPushSubscription, prio: str) -> dict[str, Any]:
    return {
        "notification": {
            "event_id": "$an_event",
            "room_id": "!a_room:localhost",
            "type": "m.room.message",
            "sender": "@alice:localhost",
            "room_name": "The room",
            "prio": prio,
            "content": {"msgtype": "m.text", "body": "hello"},
            "counts": {"unread": 3},
            "devices": [
                {
                    "app_id": WEBPUSH_APP_ID,
                    "pushkey": subscription.p256dh,
                    "data": {"endpoint": subscription.endpoint, "auth": subscription.auth},
                }
            ],
        }
    }


async def notify(sygnal: SygnalProcess, body: dict[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(sygnal.notify_url, json=body) as answer,
    ):
        assert answer.status == 200, await answer.text()
        result: dict[str, Any] = await answer.json(content_type=None)  # Sygnal says text/html
        return result


async def test_a_notification_reaches_the_receiver_decrypted(
    sygnal: SygnalProcess, webpush_receiver: WebPushReceiver
) -> None:
    subscription = webpush_receiver.subscribe()
    assert await notify(sygnal, notification(subscription, "high")) == {"rejected": []}
    assert await notify(sygnal, notification(subscription, "low")) == {"rejected": []}
    high, low = await subscription.wait_for(2, WAIT_SECONDS)
    assert high.payload == {
        "event_id": "$an_event",
        "room_id": "!a_room:localhost",
        "type": "m.room.message",
        "sender": "@alice:localhost",
        "room_name": "The room",
        "content": {"msgtype": "m.text", "body": "hello"},
        "unread": 3,
    }
    assert (high.urgency, low.urgency) == ("normal", "low")
    assert high.ttl == str(WEBPUSH_TTL_SECONDS)
    assert high.content_encoding == "aes128gcm"
    assert high.vapid_key == sygnal.application_server_key
    assert webpush_receiver.errors == []


async def test_an_expired_subscription_is_rejected(
    sygnal: SygnalProcess, webpush_receiver: WebPushReceiver
) -> None:
    subscription = webpush_receiver.subscribe()
    subscription.status = 410
    result = await notify(sygnal, notification(subscription, "high"))
    assert result == {"rejected": [subscription.p256dh]}
    assert subscription.pushes == []


async def test_a_failing_push_service_is_not_a_rejection(
    sygnal: SygnalProcess, webpush_receiver: WebPushReceiver
) -> None:
    """A 5xx from the push service is temporary for Sygnal: the pushkey is not rejected
    (and the homeserver's notify is answered 200, so it is not retried either)."""
    subscription = webpush_receiver.subscribe()
    subscription.status = 503
    assert await notify(sygnal, notification(subscription, "high")) == {"rejected": []}
    assert subscription.pushes == []
