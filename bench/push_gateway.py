"""A push gateway on 127.0.0.1 for the push bench: ``POST /_matrix/push/v1/notify``
answers ``{"rejected": []}`` at once and notes when each event's notification reached
each pushkey (the first arrival counts; a repeat is counted apart)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

NOTIFY_PATH = "/_matrix/push/v1/notify"
WAKE_SECONDS = 1.0


class PushGateway:
    """``start``, ``url`` (what pushers put in ``data.url``), ``wait_for``, ``stop``."""

    def __init__(self) -> None:
        self.arrivals: dict[str, dict[str, float]] = {}
        self.repeats = 0
        self.url = ""
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(NOTIFY_PATH, self._notify)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}{NOTIFY_PATH}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _notify(self, request: web.Request) -> web.Response:
        now = time.perf_counter()
        body: Any = await request.json()
        notification = body.get("notification", {}) if isinstance(body, dict) else {}
        event_id = notification.get("event_id")
        if isinstance(event_id, str):
            seen = self.arrivals.setdefault(event_id, {})
            for device in notification.get("devices", []):
                pushkey = device.get("pushkey")
                if not isinstance(pushkey, str):
                    continue
                if pushkey in seen:
                    self.repeats += 1
                else:
                    seen[pushkey] = now
            self._changed.set()
        return web.json_response({"rejected": []})

    async def wait_for(self, event_id: str, count: int, deadline: float) -> dict[str, float]:
        """The arrivals of ``event_id`` once ``count`` pushkeys have it, or at ``deadline``
        (a ``time.perf_counter()`` value) with however many have."""
        while len(self.arrivals.get(event_id, {})) < count:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, WAKE_SECONDS))
            except TimeoutError:
                continue
        return dict(self.arrivals.get(event_id, {}))
