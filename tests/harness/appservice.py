"""A recording application service on loopback, and its registration file.

``RecordingAppService`` is a real HTTP server speaking the Application Service API's
receiving side: it checks the ``hs_token`` bearer token, records every transaction
(``PUT /_matrix/app/v1/transactions/{txnId}``, a repeated ID recorded once, as the spec
asks of an appservice), answers user and alias queries from sets the test fills, the
third-party lookups from ``thirdparty`` and ``/ping``. ``fail_with`` makes it answer
transactions with an error status (an appservice that is down) until cleared.
``write_registration`` writes the YAML file a server's ``app_service_config_files`` lists.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from harness.ports import free_port

__all__ = ["RecordingAppService", "write_registration"]


def write_registration(
    path: Path,
    *,
    appservice_id: str,
    url: str | None,
    as_token: str,
    hs_token: str,
    sender_localpart: str,
    user_regex: str,
    alias_regex: str | None = None,
    room_regex: str | None = None,
    exclusive: bool = True,
    **extra: Any,
) -> Path:
    """Write a registration (as bridges generate them) and return its path; ``extra``
    adds fields such as ``receive_ephemeral=True`` or ``rate_limited=False``."""
    info: dict[str, Any] = {
        "id": appservice_id,
        "url": url,
        "as_token": as_token,
        "hs_token": hs_token,
        "sender_localpart": sender_localpart,
        "namespaces": {
            "users": [{"exclusive": exclusive, "regex": user_regex}],
            "aliases": [{"exclusive": exclusive, "regex": alias_regex}] if alias_regex else [],
            "rooms": [{"exclusive": False, "regex": room_regex}] if room_regex else [],
        },
    }
    info.update(extra)
    path.write_text(yaml.safe_dump(info), encoding="utf-8")
    return path


@dataclass
class RecordingAppService:
    hs_token: str
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    transactions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    known_users: set[str] = field(default_factory=set)
    known_aliases: set[str] = field(default_factory=set)
    queried_users: list[str] = field(default_factory=list)
    queried_aliases: list[str] = field(default_factory=list)
    thirdparty: dict[str, Any] = field(default_factory=dict)
    pings: list[dict[str, Any]] = field(default_factory=list)
    fail_with: int | None = None
    _runner: web.AppRunner | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event received, in the order of the transactions."""
        return [event for _, body in self.transactions for event in body.get("events", [])]

    async def start(self) -> None:
        app = web.Application()
        prefix = "/_matrix/app/v1"
        app.router.add_put(prefix + "/transactions/{txn_id}", self._transaction)
        app.router.add_get(prefix + "/users/{user_id}", self._user)
        app.router.add_get(prefix + "/rooms/{alias}", self._alias)
        app.router.add_post(prefix + "/ping", self._ping)
        app.router.add_get(prefix + "/thirdparty/{kind}", self._thirdparty)
        app.router.add_get(prefix + "/thirdparty/{kind}/{protocol}", self._thirdparty)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, predicate: Any, limit: float = 10.0) -> None:
        """Wait (bounded) until ``predicate(self)`` holds, re-checked on each request."""
        async with asyncio.timeout(limit):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.hs_token}"

    def _forbidden(self) -> web.Response:
        return web.json_response({"errcode": "M_FORBIDDEN", "error": "bad hs_token"}, status=403)

    def _touch(self) -> None:
        self._changed.set()

    async def _transaction(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._forbidden()
        if self.fail_with is not None:
            self._touch()
            return web.json_response({"errcode": "M_UNKNOWN"}, status=self.fail_with)
        txn_id = request.match_info["txn_id"]
        body = await request.json()
        if txn_id not in {seen for seen, _ in self.transactions}:
            self.transactions.append((txn_id, body))
        self._touch()
        return web.json_response({})

    async def _user(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._forbidden()
        user_id = request.match_info["user_id"]
        self.queried_users.append(user_id)
        self._touch()
        if user_id in self.known_users:
            return web.json_response({})
        return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)

    async def _alias(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._forbidden()
        alias = request.match_info["alias"]
        self.queried_aliases.append(alias)
        self._touch()
        if alias in self.known_aliases:
            return web.json_response({})
        return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)

    async def _ping(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._forbidden()
        self.pings.append(await request.json())
        self._touch()
        return web.json_response({})

    async def _thirdparty(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._forbidden()
        key = request.path.removeprefix("/_matrix/app/v1/thirdparty/")
        if key not in self.thirdparty:
            return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)
        return web.json_response(self.thirdparty[key])
