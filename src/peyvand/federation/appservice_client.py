"""The HTTP client of application services (Application Service API).

The URL comes from the operator's registration file, so it is not guarded like a push
gateway's (bridges usually listen on loopback). Every request carries the appservice's
``hs_token`` as a bearer token (spec v1.4 "Authorization"), is bounded by a timeout, and
reads at most 1 MiB of answer. What went wrong is told apart as the ping endpoint's
errors need it (``AppServiceError.kind``): the connection failed, it timed out, or the
appservice answered with another status (``status`` and its ``body``).

Transactions have a connection pool of their own, so they never wait behind questions:
user and alias queries, third-party lookups and pings, which clients can cause at will,
share another pool of at most ``QUERY_CONNECTIONS_PER_HOST`` connections to one
appservice. Each appservice has one transaction in flight at a time (its sender), so the
transactions' pool needs no limit of its own.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import quote

import aiohttp
import orjson

from peyvand.types import JsonDict

__all__ = ["AppServiceClient", "AppServiceError", "AppServiceTarget"]

logger = logging.getLogger(__name__)

_MAX_ANSWER_BYTES: Final = 1024 * 1024
APP_PREFIX: Final = "/_matrix/app/v1"

ErrorKind = Literal["connection", "timeout", "status"]
# Concurrent questions (queries, third-party lookups, pings) to one appservice host.
QUERY_CONNECTIONS_PER_HOST: Final = 8


@dataclass(frozen=True, slots=True)
class AppServiceTarget:
    """Where an appservice listens and the token it expects from us."""

    url: str
    hs_token: str


class AppServiceError(Exception):
    """``body``: the appservice's answer as it sent it (text, whatever its type: a proxy's
    HTML error page included), for the ping endpoint's ``M_BAD_STATUS``."""

    def __init__(
        self, kind: ErrorKind, message: str, status: int | None = None, body: str = ""
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.status = status
        self.body = body


class AppServiceClient:
    """Two ``aiohttp.ClientSession``s for every appservice: one for transactions, one
    for everything else (see the module's docstring)."""

    def __init__(self, timeout: float = 60.0) -> None:
        self._timeout = timeout
        self._transactions: aiohttp.ClientSession | None = None
        self._questions: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._transactions is None:
            self._transactions = self._session(aiohttp.TCPConnector(limit=0))
        if self._questions is None:
            self._questions = self._session(
                aiohttp.TCPConnector(limit=0, limit_per_host=QUERY_CONNECTIONS_PER_HOST)
            )

    @staticmethod
    def _session(connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=connector, json_serialize=lambda value: orjson.dumps(value).decode()
        )

    async def close(self) -> None:
        sessions = (self._transactions, self._questions)
        self._transactions = self._questions = None
        for session in sessions:
            if session is not None:
                await session.close()

    async def request(
        self,
        target: AppServiceTarget,
        method: str,
        path: str,
        *,
        body: JsonDict | None = None,
        query: dict[str, str] | None = None,
        time_limit: float | None = None,
    ) -> Any:
        """Send ``method`` ``{url}{path}`` (a question, never a transaction) and return
        the JSON answer of a 200; anything else raises ``AppServiceError``. ``path`` is
        already percent-encoded."""
        if self._questions is None:
            await self.start()
        assert self._questions is not None
        return await self._send(self._questions, target, method, path, body, query, time_limit)

    async def _send(
        self,
        session: aiohttp.ClientSession,
        target: AppServiceTarget,
        method: str,
        path: str,
        body: JsonDict | None,
        query: dict[str, str] | None,
        time_limit: float | None,
    ) -> Any:
        url = target.url.rstrip("/") + path
        data = orjson.dumps(body) if body is not None else None
        headers = {"Authorization": f"Bearer {target.hs_token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with asyncio.timeout(time_limit if time_limit is not None else self._timeout):
                async with session.request(
                    method, url, data=data, params=query, headers=headers, allow_redirects=False
                ) as resp:
                    raw = await resp.content.read(_MAX_ANSWER_BYTES)
                    status = resp.status
        except TimeoutError as exc:
            raise AppServiceError("timeout", f"{method} {url} timed out") from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise AppServiceError("connection", f"{method} {url}: {exc}") from exc
        if status != 200:
            text = raw.decode("utf-8", "backslashreplace")
            raise AppServiceError("status", f"{method} {url}: HTTP {status}", status, text)
        try:
            return orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            return None

    async def push_transaction(self, target: AppServiceTarget, txn_id: str, body: JsonDict) -> None:
        """``PUT /_matrix/app/v1/transactions/{txnId}``: a 200 means it was received."""
        if self._transactions is None:
            await self.start()
        assert self._transactions is not None
        path = f"{APP_PREFIX}/transactions/{quote(txn_id, safe='')}"
        await self._send(self._transactions, target, "PUT", path, body, None, None)

    async def query_user(self, target: AppServiceTarget, user_id: str) -> bool:
        """``GET /users/{userId}``: whether the appservice created (or has) the user."""
        return await self._exists(target, f"{APP_PREFIX}/users/{quote(user_id, safe='')}")

    async def query_alias(self, target: AppServiceTarget, alias: str) -> bool:
        """``GET /rooms/{roomAlias}``: whether the appservice created a room for it."""
        return await self._exists(target, f"{APP_PREFIX}/rooms/{quote(alias, safe='')}")

    async def _exists(self, target: AppServiceTarget, path: str) -> bool:
        try:
            await self.request(target, "GET", path)
        except AppServiceError as exc:
            if exc.kind != "status":
                logger.warning("appservice query failed: %s", exc)
            return False
        return True

    async def ping(
        self, target: AppServiceTarget, transaction_id: str | None, time_limit: float
    ) -> None:
        """``POST /_matrix/app/v1/ping``; raises ``AppServiceError`` as it failed."""
        body: JsonDict = {} if transaction_id is None else {"transaction_id": transaction_id}
        await self.request(target, "POST", f"{APP_PREFIX}/ping", body=body, time_limit=time_limit)
