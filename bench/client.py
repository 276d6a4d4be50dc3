"""The Client-Server API calls the workloads make: standard v3 endpoints over aiohttp, so
the same client runs unchanged against Peyvand and Synapse."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

CLIENT_V3 = "/_matrix/client/v3"
PASSWORD = "bench password, not a secret"
REQUEST_TIMEOUT_SECONDS = 60.0


class BenchClientError(RuntimeError):
    """A setup request failed (measured requests count errors instead of raising)."""


@dataclass(frozen=True, slots=True)
class Account:
    user_id: str
    access_token: str


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any
    size: int
    seconds: float


def new_session() -> aiohttp.ClientSession:
    """A keep-alive session with no cap on connections (hundreds of long-polls at once)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False))


class MatrixClient:
    """Requests against one homeserver at ``base_url``."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        """One request to ``/_matrix/client/v3/<path>``; times it from send to full body."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        started = time.perf_counter()
        async with self._session.request(
            method,
            f"{self.base_url}{CLIENT_V3}/{path}",
            json=body,
            headers=headers,
            params=params,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
        ) as response:
            raw = await response.read()
        seconds = time.perf_counter() - started
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return Reply(response.status, parsed, len(raw), seconds)

    async def register(self, localpart: str) -> Account:
        """Register with the m.login.dummy flow of User-Interactive Authentication."""
        body: dict[str, Any] = {"username": localpart, "password": PASSWORD}
        reply = await self.request("POST", "register", body)
        if reply.status == 401 and isinstance(reply.body, dict) and "session" in reply.body:
            body["auth"] = {"type": "m.login.dummy", "session": reply.body["session"]}
            reply = await self.request("POST", "register", body)
        result = _ok(reply, "register")
        return Account(result["user_id"], result["access_token"])

    async def create_room(self, account: Account, preset: str = "public_chat") -> str:
        reply = await self.request("POST", "createRoom", {"preset": preset}, account.access_token)
        room_id: str = _ok(reply, "createRoom")["room_id"]
        return room_id

    async def join(self, account: Account, room_id: str) -> None:
        reply = await self.request("POST", f"join/{quote(room_id)}", {}, account.access_token)
        _ok(reply, "join")

    async def send(self, account: Account, room_id: str, txn_id: str, text: str) -> Reply:
        """PUT an m.room.message; the caller judges the reply (measured, not raised)."""
        return await self.request(
            "PUT",
            f"rooms/{quote(room_id)}/send/m.room.message/{quote(txn_id)}",
            {"msgtype": "m.text", "body": text},
            account.access_token,
        )

    async def sync(
        self,
        account: Account,
        since: str | None = None,
        timeout_ms: int = 0,
        sync_filter: dict[str, Any] | None = None,
    ) -> Reply:
        params = {"timeout": str(timeout_ms)}
        if since is not None:
            params["since"] = since
        if sync_filter is not None:
            params["filter"] = json.dumps(sync_filter, separators=(",", ":"))
        return await self.request("GET", "sync", token=account.access_token, params=params)


def _ok(reply: Reply, what: str) -> Any:
    if reply.status != 200:
        raise BenchClientError(f"{what} answered {reply.status}: {reply.body}")
    return reply.body
