"""A thin JSON client for the Client-Server API, on aiohttp. Deliberately small."""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from peyvand.types import UserID

CLIENT_V3 = "/_matrix/client/v3"
DEFAULT_PASSWORD = "correct horse battery staple"
REQUEST_TIMEOUT_SECONDS = 30

_names = itertools.count(1)


def unique_localpart(prefix: str = "user") -> str:
    """A localpart no other test of this session uses (servers live for the session)."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def new_session() -> aiohttp.ClientSession:
    """An HTTP session without keep-alive, so a server restarted under it (``kill -9``
    and start) is simply connected to again rather than failing on a dead connection."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


@dataclass(frozen=True, slots=True)
class Account:
    """A logged-in device: what /register and /login return."""

    user_id: UserID
    access_token: str
    device_id: str
    password: str


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: Any

    def ok(self) -> Any:
        """The body of a 200 response; any other status fails the test with the body."""
        assert self.status == 200, f"expected 200, got {self.status}: {self.body}"
        return self.body


class MatrixClient:
    """Requests against one homeserver; paths starting with ``/`` are used as they are,
    others are relative to ``/_matrix/client/v3/``."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")

    async def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        token: str | Account | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Response:
        """Send one request; the JSON body of the answer (or its text) comes back."""
        url = self.base_url + (path if path.startswith("/") else f"{CLIENT_V3}/{path}")
        headers = {}
        if token is not None:
            access_token = token.access_token if isinstance(token, Account) else token
            headers["Authorization"] = f"Bearer {access_token}"
        async with self._session.request(
            method,
            url,
            json=json,
            headers=headers,
            params=params,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
        ) as response:
            text = await response.text()
            try:
                body: Any = await response.json(content_type=None) if text else None
            except ValueError:
                body = text
            return Response(response.status, body)

    async def register(
        self, username: str | None = None, password: str = DEFAULT_PASSWORD
    ) -> Account:
        """Register with the m.login.dummy flow (User-Interactive Authentication)."""
        body: dict[str, Any] = {"username": username or unique_localpart(), "password": password}
        first = await self.request("POST", "register", json=body)
        if first.status == 401 and isinstance(first.body, dict) and "session" in first.body:
            body["auth"] = {"type": "m.login.dummy", "session": first.body["session"]}
            first = await self.request("POST", "register", json=body)
        result = first.ok()
        return Account(
            UserID(result["user_id"]), result["access_token"], result["device_id"], password
        )

    async def login(self, username: str, password: str = DEFAULT_PASSWORD) -> Account:
        """Log in with m.login.password; ``username`` is a localpart or a full user ID."""
        result = (
            await self.request(
                "POST",
                "login",
                json={
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": username},
                    "password": password,
                },
            )
        ).ok()
        return Account(
            UserID(result["user_id"]), result["access_token"], result["device_id"], password
        )
