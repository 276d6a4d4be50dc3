"""The signed HTTP client for requests to other homeservers (Server-Server API, "API
standards", "TLS", "Resolving server names", "Request Authentication").

Each request: check the destination (a valid server name, not us, allowed by the
``ServerPolicy``); resolve it (``ServerResolver``); connect over HTTPS to the resolved host
and port with SNI and certificate check for the resolved TLS name and the resolved ``Host``
header; sign it with ``X-Matrix`` over exactly the path and query string that go on the
request line; read a bounded body within a bounded time. SRV answers can give several
targets: they are tried in order while connecting fails (nothing has been sent then).

Unless ``test_network``, non-public addresses are refused: host names through the
connector's resolver (``netguard.FilteringResolver``), IP literals before connecting; and
certificates are verified against the system's authorities.

Callers are the other federation modules: ``transport.FederationTransport`` writes every
path (already percent-encoded, ``urllib.parse.quote(room_id, safe="")`` for each parameter)
and is what services use; ``query`` values are encoded here. ``open_get`` hands over an
unread aiohttp response, for ``federation.media`` to stream.

Errors::

    FederationError
      FederationRefused      not sent: invalid server name, this server, or denied by policy
      FederationUnreachable  no answer: DNS, connection, TLS, timeout, response too large,
                             invalid JSON
      FederationHttpError    the server answered with a non-2xx status (status, errcode,
                             message, body)
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDictProxy
from signedjson.types import SigningKey
from yarl import URL

from peyvand.events.json_input import NotJson, UnacceptableJson, parse_federation_json
from peyvand.federation.discovery import (
    DiscoveryError,
    ResolvedServer,
    ServerResolver,
    parse_server_name,
)
from peyvand.federation.policy import ServerPolicy
from peyvand.federation.request_auth import authorization_header
from peyvand.federation.tls import outbound_connector
from peyvand.netguard import is_blocked_error, is_ip_allowed, parse_ip
from peyvand.types import ServerName

Query = Mapping[str, str | Sequence[str]]

DEFAULT_MAX_RESPONSE_SIZE: Final = 100 * 1024 * 1024
CONNECT_TIMEOUT: Final = 20.0  # seconds per connection attempt (within the request's bound)
ERROR_BODY_MAX: Final = 64 * 1024  # of a non-2xx body, read for its errcode; the rest is dropped

_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_READ_CHUNK: Final = 64 * 1024
# An absolute path of RFC 3986 characters; '%' only as an escape.
_PATH: Final = re.compile(r"/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")


class FederationError(Exception):
    """A request to another server failed; see the subclasses."""


class FederationRefused(FederationError):
    """The request was not sent: invalid destination, this server, or denied by policy."""


class FederationUnreachable(FederationError):
    """No (usable) answer: DNS, connection, TLS, timeout, response too large, bad JSON."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FederationHttpError(FederationError):
    """The server answered with a non-2xx status.

    ``errcode`` and ``message`` come from a Matrix JSON error body when there is one;
    ``body`` is the parsed JSON, or the (at most 64 KiB of) raw bytes otherwise.
    """

    def __init__(
        self,
        status: int,
        errcode: str | None,
        message: str,
        body: Any,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"HTTP {status}" + (f" {errcode}" if errcode else "") + f": {message}")
        self.status = status
        self.errcode = errcode
        self.message = message
        self.body = body
        self.headers: Mapping[str, str] = headers or {}


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


_NO_CONTENT: Final[Any] = object()


def encode_query(query: Query | None) -> str:
    """``query`` as a query string (without ``?``): keys and values percent-encoded as UTF-8
    (spaces as ``%20``), sequences as repeated keys, in the mapping's order."""
    if not query:
        return ""
    pairs = []
    for key, values in query.items():
        for value in [values] if isinstance(values, str) else values:
            pairs.append(f"{urllib.parse.quote(key, safe='')}={urllib.parse.quote(value, safe='')}")
    return "&".join(pairs)


def request_uri(path: str, query: Query | None) -> str:
    """The request target that is sent and signed: ``path`` plus the encoded query.

    ``path`` must be an absolute, percent-encoded path without ``.``/``..`` segments (which
    servers and proxies rewrite, breaking the signature); ValueError otherwise.
    """
    if not _PATH.fullmatch(path):
        raise ValueError(f"not an absolute percent-encoded path: {path!r}")
    if any(segment in (".", "..") for segment in path.split("/")):
        raise ValueError(f"path with dot segments: {path!r}")
    query_string = encode_query(query)
    return f"{path}?{query_string}" if query_string else path


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _decode_json(body: bytes, what: str) -> Any:
    """A response body, within the limits every JSON from another server meets
    (``events.json_input``: depth and integers here; each reader checks its items)."""
    try:
        return parse_federation_json(body, exact_ints=False)
    except (NotJson, UnacceptableJson) as exc:
        raise FederationUnreachable(f"{what}: invalid JSON response: {exc}") from exc


class FederationClient:
    """Signed requests from ``server_name`` to other homeservers.

    One ``aiohttp.ClientSession`` (keep-alive pool, no cookies, no proxy from the
    environment) opened by ``start()`` and closed by ``close()``. ``request_timeout`` bounds
    every request as a whole (resolution, connection, response); ``max_response_size`` the
    body of JSON responses.
    """

    def __init__(
        self,
        server_name: ServerName,
        signing_key: SigningKey,
        *,
        resolver: ServerResolver,
        policy: ServerPolicy,
        test_network: bool,
        user_agent: str = "Peyvand",
        request_timeout: float = 60.0,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
    ) -> None:
        self.server_name = server_name
        self._signing_key = signing_key
        self._resolver = resolver
        self._policy = policy
        self._test_network = test_network
        self._user_agent = user_agent
        self._request_timeout = request_timeout
        self._max_response_size = max_response_size
        self._session: aiohttp.ClientSession | None = None
        self._dns_resolver: AbstractResolver | None = None

    async def start(self) -> None:
        """Open the session; must run in the event loop that will use it."""
        if self._session is not None:
            return
        connector, self._dns_resolver = outbound_connector(
            self._test_network, limit=200, limit_per_host=8
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
            headers={"User-Agent": self._user_agent},
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        resolver, self._dns_resolver = self._dns_resolver, None
        if session is not None:
            await session.close()
        if resolver is not None:
            await resolver.close()

    # --- the API ----------------------------------------------------------------------------

    async def get_json(
        self,
        destination: ServerName,
        path: str,
        *,
        query: Query | None = None,
        signed: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 (bounds resolution too)
    ) -> Any:
        """``GET`` ``path`` on ``destination``; the decoded JSON response."""
        return await self._json_request(
            "GET", destination, path, _NO_CONTENT, query, signed, timeout
        )

    async def post_json(
        self,
        destination: ServerName,
        path: str,
        body: Any,
        *,
        query: Query | None = None,
        signed: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 (bounds resolution too)
    ) -> Any:
        """``POST`` the JSON ``body``; the decoded JSON response."""
        return await self._json_request("POST", destination, path, body, query, signed, timeout)

    async def put_json(
        self,
        destination: ServerName,
        path: str,
        body: Any,
        *,
        query: Query | None = None,
        signed: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 (bounds resolution too)
    ) -> Any:
        """``PUT`` the JSON ``body``; the decoded JSON response."""
        return await self._json_request("PUT", destination, path, body, query, signed, timeout)

    @asynccontextmanager
    async def open_get(
        self,
        destination: ServerName,
        path: str,
        *,
        query: Query | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (bounds the whole download)
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A signed ``GET`` whose 2xx response is handed over unread, for the caller to
        stream (remote media); redirects are not followed. Non-2xx answers raise
        ``FederationHttpError``; the whole exchange is bounded by ``timeout``."""
        uri = request_uri(path, query)
        self._check_destination(destination)
        session = self._require_session()
        headers = {
            "Authorization": authorization_header(
                self.server_name, self._signing_key, destination, "GET", uri, None
            )
        }
        async with self._bounded("GET", destination, timeout):
            failures = []
            for server in await self._resolve(destination):
                refused = self._address_refused(server.host)
                if refused is not None:
                    failures.append(refused)
                    continue
                url = URL(f"https://{_netloc(server.host, server.port)}{uri}", encoded=True)
                try:
                    async with session.get(
                        url,
                        headers={**headers, "Host": server.host_header},
                        server_hostname=server.tls_server_name,
                        allow_redirects=False,
                    ) as resp:
                        if not 200 <= resp.status < 300:
                            self._raise_for_status(await self._read(resp, 0))
                        yield resp
                        return
                except aiohttp.ClientConnectorError as exc:
                    failures.append(f"{_netloc(server.host, server.port)}: {exc}")
                except (aiohttp.ClientError, OSError) as exc:
                    raise FederationUnreachable(
                        f"GET {destination}: {type(exc).__name__}: {exc}"
                    ) from exc
            raise FederationUnreachable(f"GET {destination}: " + "; ".join(failures))

    # --- internals --------------------------------------------------------------------------

    async def _json_request(
        self,
        method: str,
        destination: ServerName,
        path: str,
        content: Any,
        query: Query | None,
        signed: bool,
        time_limit: float | None,
    ) -> Any:
        uri = request_uri(path, query)
        self._check_destination(destination)
        session = self._require_session()
        async with self._bounded(method, destination, time_limit):
            candidates = await self._resolve(destination)
            response, _server = await self._send_to_server(
                session,
                destination,
                candidates,
                method,
                uri,
                content,
                signed,
                self._max_response_size,
            )
        self._raise_for_status(response)
        return _decode_json(response.body, f"{method} {destination}{path}")

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("FederationClient.start() has not been called")
        return self._session

    def _check_destination(self, destination: ServerName) -> None:
        try:
            parse_server_name(destination)
        except DiscoveryError as exc:
            raise FederationRefused(str(exc)) from exc
        if destination.lower() == self.server_name.lower():
            raise FederationRefused(f"{destination} is this server")
        if not self._policy.allows(destination):
            raise FederationRefused(f"federation with {destination} is not allowed")

    def _bounded(
        self, method: str, destination: ServerName, timeout: float | None
    ) -> AbstractAsyncContextManager[None]:
        seconds = self._request_timeout if timeout is None else timeout
        return _bounded(seconds, f"{method} {destination}")

    async def _resolve(self, destination: ServerName) -> list[ResolvedServer]:
        try:
            return await self._resolver.resolve_all(destination)
        except DiscoveryError as exc:
            raise FederationUnreachable(f"cannot resolve {destination}: {exc}") from exc

    def _address_refused(self, host: str) -> str | None:
        """Why ``host`` (an IP literal) may not be connected to, or None."""
        ip = parse_ip(host)
        if ip is not None and not self._test_network and not is_ip_allowed(ip):
            return f"{ip} is not an allowed address"
        return None

    async def _send_to_server(
        self,
        session: aiohttp.ClientSession,
        destination: ServerName,
        candidates: Sequence[ResolvedServer],
        method: str,
        uri: str,
        content: Any,
        signed: bool,
        max_size: int,
    ) -> tuple[_Response, ResolvedServer]:
        """Send to the first candidate that accepts a connection."""
        headers: dict[str, str] = {}
        data: bytes | None = None
        if content is not _NO_CONTENT:
            data = orjson.dumps(content)
            headers["Content-Type"] = "application/json"
        if signed:
            headers["Authorization"] = authorization_header(
                self.server_name,
                self._signing_key,
                destination,
                method,
                uri,
                None if content is _NO_CONTENT else content,
            )
        failures = []
        for server in candidates:
            refused = self._address_refused(server.host)
            if refused is not None:
                failures.append(refused)
                continue
            url = URL(f"https://{_netloc(server.host, server.port)}{uri}", encoded=True)
            try:
                for attempt in range(2):
                    try:
                        async with session.request(
                            method,
                            url,
                            data=data,
                            headers={**headers, "Host": server.host_header},
                            server_hostname=server.tls_server_name,
                            allow_redirects=False,
                        ) as resp:
                            return await self._read(resp, max_size), server
                    except aiohttp.ServerDisconnectedError:
                        # A pooled keep-alive connection the peer had closed: the request
                        # never reached it, so send it once more on a fresh connection.
                        if attempt:
                            raise
            except aiohttp.ClientConnectorError as exc:  # nothing sent: try the next one
                if is_blocked_error(exc):
                    failures.append(f"{server.host} resolves only to disallowed addresses")
                else:
                    failures.append(f"{_netloc(server.host, server.port)}: {exc}")
            except (aiohttp.ClientError, OSError) as exc:
                raise FederationUnreachable(
                    f"{method} {destination}: {type(exc).__name__}: {exc}"
                ) from exc
        raise FederationUnreachable(f"{method} {destination}: " + "; ".join(failures))

    async def _read(self, resp: aiohttp.ClientResponse, max_size: int) -> _Response:
        """The response with its body: at most ``max_size`` bytes for a 2xx (else
        FederationUnreachable), the first 64 KiB of anything else, nothing of a redirect."""
        if resp.status in _REDIRECT_STATUSES:
            body = b""
        elif 200 <= resp.status < 300:
            if resp.content_length is not None and resp.content_length > max_size:
                raise FederationUnreachable(
                    f"response too large: Content-Length {resp.content_length} > {max_size}"
                )
            buffer = bytearray()
            async for chunk in resp.content.iter_chunked(_READ_CHUNK):
                buffer += chunk
                if len(buffer) > max_size:
                    raise FederationUnreachable(f"response too large: over {max_size} bytes")
            body = bytes(buffer)
        else:
            body = await resp.content.read(ERROR_BODY_MAX)
        return _Response(resp.status, resp.headers, body)

    @staticmethod
    def _raise_for_status(response: _Response) -> None:
        if 200 <= response.status < 300:
            return
        errcode: str | None = None
        message = f"HTTP {response.status}"
        body: Any = response.body
        try:
            body = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            pass
        else:
            if isinstance(body, dict):
                if isinstance(body.get("errcode"), str):
                    errcode = body["errcode"]
                if isinstance(body.get("error"), str):
                    message = body["error"]
        headers = {name: value for name, value in response.headers.items()}
        raise FederationHttpError(response.status, errcode, message, body, headers=headers)


@asynccontextmanager
async def _bounded(seconds: float, what: str) -> AsyncIterator[None]:
    """``asyncio.timeout(seconds)``; running out (or aiohttp's own socket timeouts) becomes
    FederationUnreachable."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        raise FederationUnreachable(f"{what}: timed out after {seconds:g} s") from exc
