"""A recording hop in front of a push gateway: it keeps every ``POST
/_matrix/push/v1/notify`` body and passes it on unchanged, answering what the gateway
answered. Through Sygnal's webpush app a browser sees neither ``prio`` (only the
``Urgency`` it maps it to) nor the device's ``tweaks``; a test that checks those points
its pusher here."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from harness.local_http import start_post_site
from harness.ports import free_port

HOST = "127.0.0.1"
NOTIFY_PATH = "/_matrix/push/v1/notify"
FORWARD_TIMEOUT_SECONDS = 10.0


class NotifyTap:
    """The hop at ``url``; what passed is in ``requests`` (the whole bodies)."""

    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}{NOTIFY_PATH}"
        self.requests: list[dict[str, Any]] = []
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._runner = await start_post_site(HOST, self.port, NOTIFY_PATH, self._forward)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def notifications_for(
        self, pushkey: str, count: int, within: float
    ) -> list[dict[str, Any]]:
        """The first ``count`` notifications sent to ``pushkey``, once they have passed;
        ``TimeoutError`` after ``within`` seconds."""

        def matching() -> list[dict[str, Any]]:
            return [
                body["notification"]
                for body in self.requests
                if any(d.get("pushkey") == pushkey for d in body["notification"]["devices"])
            ]

        async with self._arrived:
            try:
                await asyncio.wait_for(
                    self._arrived.wait_for(lambda: len(matching()) >= count), within
                )
            except TimeoutError:
                raise TimeoutError(f"{len(matching())} of {count} notifications") from None
            return matching()[:count]

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.json()
        async with self._arrived:
            self.requests.append(body)
            self._arrived.notify_all()
        assert self._session is not None
        async with self._session.post(
            self.upstream_url,
            json=body,
            timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_SECONDS),
        ) as answer:
            return web.Response(
                status=answer.status,
                body=await answer.read(),
                content_type="application/json",
            )
