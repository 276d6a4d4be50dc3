"""A browser's push service on loopback, for the push tests that go through Sygnal.

A ``WebPushSubscription`` is what ``PushManager.subscribe()`` gives a web app: an
endpoint URL, a P-256 key pair (its public half, ``p256dh``, is the pushkey of the
Matrix pusher) and an auth secret. ``WebPushReceiver`` is the push service behind those
endpoints: an aiohttp server on 127.0.0.1 that takes Sygnal's POSTs, decrypts each body
(RFC 8291, ``aes128gcm``, with ``http_ece``) with the subscription's private key and
auth secret, and records it with its ``Urgency`` and ``TTL`` headers. It answers 201
Created as a push service does, or whatever status a test sets for a subscription
(410 Gone: the subscription has expired, and Sygnal reports the pushkey rejected).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import http_ece
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from harness.local_http import start_post_site
from harness.ports import free_port

HOST = "127.0.0.1"


def b64url(data: bytes) -> str:
    """Unpadded base64url, as a push subscription's keys are written."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class ReceivedPush:
    """One push message as the service received and decrypted it."""

    payload: dict[str, Any]
    urgency: str | None
    ttl: str | None
    content_encoding: str | None
    # The ``k`` of the VAPID ``Authorization`` header: the sender's application server key.
    vapid_key: str | None
    received_at: float


@dataclass
class WebPushSubscription:
    """A subscription's endpoint and keys, with the pushes that reached it."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes
    pushes: list[ReceivedPush] = field(default_factory=list)
    # The status the receiver answers for this subscription (201, or 410 to expire it).
    status: int = 201
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def p256dh(self) -> str:
        """The public key (uncompressed point, base64url): the pusher's pushkey."""
        point = self.private_key.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )
        return b64url(point)

    @property
    def auth(self) -> str:
        return b64url(self.auth_secret)

    def decrypt(self, body: bytes) -> dict[str, Any]:
        plain: bytes = http_ece.decrypt(
            body, private_key=self.private_key, auth_secret=self.auth_secret, version="aes128gcm"
        )
        payload: dict[str, Any] = json.loads(plain)
        return payload

    async def wait_for(self, count: int, within: float) -> list[ReceivedPush]:
        """The first ``count`` pushes, once that many have arrived; ``TimeoutError`` (with
        what did arrive) after ``within`` seconds."""
        async with self.arrived:
            try:
                await asyncio.wait_for(
                    self.arrived.wait_for(lambda: len(self.pushes) >= count), within
                )
            except TimeoutError:
                raise TimeoutError(
                    f"{len(self.pushes)} of {count} pushes within {within} s: {self.pushes}"
                ) from None
            return self.pushes[:count]

    async def record(self, push: ReceivedPush) -> None:
        async with self.arrived:
            self.pushes.append(push)
            self.arrived.notify_all()


class WebPushReceiver:
    """The push service: subscriptions by endpoint path, served on ``base_url``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self._subscriptions: dict[str, WebPushSubscription] = {}
        self._runner: web.AppRunner | None = None
        # Requests whose body did not decrypt or whose path matched no subscription.
        self.errors: list[str] = []

    @property
    def netloc(self) -> str:
        """``host:port`` of the endpoints, as Sygnal's ``allowed_endpoints`` names them."""
        return f"{HOST}:{self.port}"

    def subscribe(self) -> WebPushSubscription:
        """A new subscription with fresh keys and an endpoint of its own."""
        path = f"/push/{secrets.token_urlsafe(12)}"
        subscription = WebPushSubscription(
            endpoint=self.base_url + path,
            private_key=ec.generate_private_key(ec.SECP256R1()),
            auth_secret=secrets.token_bytes(16),
        )
        self._subscriptions[path] = subscription
        return subscription

    async def start(self) -> None:
        self._runner = await start_post_site(HOST, self.port, "/push/{token}", self._receive)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        subscription = self._subscriptions.get(request.path)
        if subscription is None:
            self.errors.append(f"no subscription at {request.path}")
            return web.Response(status=404)
        body = await request.read()
        if subscription.status != 201:
            return web.Response(status=subscription.status)
        try:
            payload = subscription.decrypt(body)
        except Exception as exc:  # recorded for the test to report, answered as a bad request
            self.errors.append(f"{request.path}: {exc!r}")
            return web.Response(status=400)
        await subscription.record(
            ReceivedPush(
                payload=payload,
                urgency=request.headers.get("Urgency"),
                ttl=request.headers.get("TTL"),
                content_encoding=request.headers.get("Content-Encoding"),
                vapid_key=_vapid_key(request.headers.get("Authorization", "")),
                received_at=time.monotonic(),
            )
        )
        return web.Response(status=201, headers={"Location": request.url.path})


def _vapid_key(authorization: str) -> str | None:
    """``k`` of ``Authorization: vapid t=<JWT>, k=<key>`` (RFC 8292), if present."""
    scheme, _, parameters = authorization.partition(" ")
    if scheme.lower() != "vapid":
        return None
    for parameter in parameters.split(","):
        name, _, value = parameter.strip().partition("=")
        if name == "k":
            return value
    return None
