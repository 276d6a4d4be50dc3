"""The HTTP client of push gateways (Push Gateway API, ``POST /_matrix/push/v1/notify``).

Gateway URLs come from users (a pusher's ``data.url``), so every connection goes through
the outbound guard (``netguard``): host names resolve through ``FilteringResolver`` and IP
literals are checked before each request; loopback and private ranges are refused unless
the operator allowed them (``push.gateway_allowed_networks``). Redirects are not followed.
Each request is bounded by the configured timeout; the answer's body is read up to 64 KiB.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from typing import Final

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver
from yarl import URL

from peyvand.netguard import (
    FilteringResolver,
    IPNetwork,
    close_session,
    guarded_session,
    is_blocked_error,
    is_ip_allowed,
    parse_ip,
)
from peyvand.types import JsonDict

logger = logging.getLogger(__name__)

_MAX_ANSWER_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class GatewayAnswer:
    """A 200 from the gateway: the pushkeys it rejected (``rejected``, possibly empty)."""

    rejected: tuple[str, ...]


class GatewayError(Exception):
    """The gateway could not be reached, timed out, or answered other than 200."""


class PushGatewayClient:
    """One ``aiohttp.ClientSession`` for every pusher, its resolver guarded."""

    def __init__(
        self,
        allowed_networks: tuple[IPNetwork, ...],
        timeout: float,
        *,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._allowed = allowed_networks
        self._timeout = timeout
        self._inner_resolver = resolver
        self._resolver: FilteringResolver | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        self._session, self._resolver = guarded_session(
            self._allowed, self._inner_resolver, limit=0, limit_per_host=16, timeout=self._timeout
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        resolver, self._resolver = self._resolver, None
        await close_session(session, resolver)

    def is_allowed(self, url: str) -> bool:
        """Whether ``url``'s host may be connected to as far as can be told without a
        look-up (an IP literal outside the allowed ranges, or a legacy numeric IPv4
        form, may not)."""
        host = URL(url).host or ""
        ip = parse_ip(host)
        if ip is not None:
            return is_ip_allowed(ip, self._allowed)
        try:
            socket.inet_aton(host)
        except OSError:
            return True
        return False  # "127.1", "0x7f.0.0.1": numeric forms that are no IP literal

    async def notify(self, url: str, notification: JsonDict) -> GatewayAnswer:
        """POST ``{"notification": ...}`` to ``url``; raises GatewayError."""
        if self._session is None:
            raise RuntimeError("PushGatewayClient.start() has not been called")
        try:
            allowed = self.is_allowed(url)
        except Exception as exc:  # not a URL the client can send to (bad port, host...)
            raise GatewayError(f"{url} is not a valid URL: {exc}") from exc
        if not allowed:
            raise GatewayError(f"{url} is not an allowed address")
        try:
            body = orjson.dumps({"notification": notification})
            async with asyncio.timeout(self._timeout):
                async with self._session.post(
                    url,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    allow_redirects=False,
                ) as resp:
                    raw = await resp.content.read(_MAX_ANSWER_BYTES)
                    status = resp.status
        except TimeoutError as exc:
            raise GatewayError("timed out") from exc
        except aiohttp.ClientConnectorError as exc:
            if is_blocked_error(exc):
                raise GatewayError(f"{url} resolves only to disallowed addresses") from exc
            raise GatewayError(str(exc)) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise GatewayError(str(exc)) from exc
        except Exception as exc:  # anything else building or sending the request
            raise GatewayError(f"{type(exc).__name__}: {exc}") from exc
        if status != 200:
            raise GatewayError(f"HTTP {status}")
        return GatewayAnswer(_rejected(raw))


def _rejected(raw: bytes) -> tuple[str, ...]:
    """The answer's ``rejected`` pushkeys (push_notifier.yaml); none if it has none."""
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ()
    rejected = answer.get("rejected") if isinstance(answer, dict) else None
    if not isinstance(rejected, list):
        return ()
    return tuple(key for key in rejected if isinstance(key, str))
