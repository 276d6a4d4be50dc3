"""Server discovery: from a server name to where to connect, which ``Host`` header to send
and which certificate to expect (Server-Server API, "Resolving server names").

``ServerResolver.resolve_all(server_name)`` follows the spec's steps:

1. an IP literal (``1.2.3.4``, ``[::1]``, with or without port): that address, the given
   port or 8448; ``Host`` is the server name; the certificate is for the address;
2. a host name with an explicit port: that host and port (A/AAAA are left to the
   connector); ``Host`` is the server name;
3. otherwise ``GET https://<hostname>/.well-known/matrix/server``; a valid ``m.server``
   delegates to ``<delegated_hostname>[:<delegated_port>]``, which is used as in 1 and 2
   or, without a port, through SRV ``_matrix-fed._tcp`` then ``_matrix._tcp`` (deprecated)
   of the delegated name, else port 8448; ``Host`` and the certificate are the delegated
   name's;
4. and 5. without a valid well-known: SRV ``_matrix-fed._tcp.<hostname>`` then
   ``_matrix._tcp.<hostname>`` (deprecated); ``Host`` and certificate stay ``<hostname>``;
6. else ``<hostname>:8448``.

SRV answers give several targets, ordered by priority and weight (RFC 2782): callers try
them in order. Caching follows Synapse where the spec leaves room: a well-known result is
kept as its ``Cache-Control``/``Expires`` say (24 h when they say nothing, at least 5 min,
at most 48 h, with 10 % jitter so servers do not all refresh at once) and refreshed during
its last 20 %, keeping the old result if that refresh fails temporarily; a failure is
kept for 1 h (2 min if a valid well-known of the server expired less than 2 h ago). SRV answers are
kept for their DNS TTL; a stale answer is used when DNS fails.

Both lookups are injectable: ``SrvLookup`` (``DnspythonSrvLookup`` by default) and
``WellKnownFetcher`` (``HttpWellKnownFetcher``, owned by the resolver when not given).

Errors: ``DiscoveryError`` when the name is invalid or DNS fails (not when records are
merely missing).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, Protocol, TypeVar

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver
from yarl import URL

from peyvand.federation.tls import outbound_connector
from peyvand.keyed_locks import KeyedLocks
from peyvand.netguard import close_session, is_blocked_error, is_ip_allowed, parse_ip
from peyvand.types import ServerName

if TYPE_CHECKING:
    import dns.asyncresolver

logger = logging.getLogger(__name__)

DEFAULT_PORT: Final = 8448
SRV_SERVICES: Final = ("_matrix-fed._tcp.", "_matrix._tcp.")  # the second is deprecated

WELL_KNOWN_PATH: Final = "/.well-known/matrix/server"
WELL_KNOWN_MAX_SIZE: Final = 50 * 1024
WELL_KNOWN_DEFAULT_CACHE: Final = 24 * 3600.0
WELL_KNOWN_MIN_CACHE: Final = 5 * 60.0
WELL_KNOWN_MAX_CACHE: Final = 48 * 3600.0
WELL_KNOWN_INVALID_CACHE: Final = 3600.0
WELL_KNOWN_DOWN_CACHE: Final = 2 * 60.0  # failure soon after a valid answer
WELL_KNOWN_REMEMBER_VALID: Final = 2 * 3600.0
WELL_KNOWN_CACHE_JITTER: Final = 0.1
WELL_KNOWN_GRACE_FACTOR: Final = 0.2  # refresh during the last 20 % of the lifetime

SRV_MIN_CACHE: Final = 30.0
SRV_MAX_CACHE: Final = 24 * 3600.0
SRV_NEGATIVE_MAX_CACHE: Final = 3600.0
SRV_NXDOMAIN_TTL: Final = 300.0

MAX_CACHE_ENTRIES: Final = 50_000

_HOSTNAME: Final = re.compile(r"[A-Za-z0-9\-.]{1,255}")
_IPV4_LIKE: Final = re.compile(r"[0-9.]+")
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})


class DiscoveryError(Exception):
    """The server name is invalid, or DNS failed while resolving it."""


@dataclass(frozen=True, slots=True)
class ResolvedServer:
    """Where to send requests for a server name, and how."""

    host: str  # IP address (without brackets) or host name to connect to
    port: int
    host_header: str  # the HTTP Host header
    tls_server_name: str  # SNI and the name (or IP address) the certificate must be valid for


def parse_server_name(server_name: str) -> tuple[str, int | None]:
    """Split a server name into its host (IPv6 without brackets) and port.

    Appendices, "Server Name": ``hostname | IPv4 | [IPv6]``, optionally ``:port``.
    Raises ``DiscoveryError`` for anything else.
    """
    host, port_text = server_name, None
    if server_name.startswith("["):
        end = server_name.find("]")
        if end == -1:
            raise DiscoveryError(f"invalid server name {server_name!r}")
        host, rest = server_name[1:end], server_name[end + 1 :]
        ip = parse_ip(host)
        if ip is None or ip.version != 6 or (rest and not rest.startswith(":")):
            raise DiscoveryError(f"invalid server name {server_name!r}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_or_empty = server_name.partition(":")
        port_text = port_text_or_empty if colon else None
        if not _HOSTNAME.fullmatch(host):
            raise DiscoveryError(f"invalid server name {server_name!r}")
        if _IPV4_LIKE.fullmatch(host) and parse_ip(host) is None:
            raise DiscoveryError(f"invalid IPv4 address in server name {server_name!r}")
    if port_text is None:
        return host, None
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise DiscoveryError(f"invalid port in server name {server_name!r}")
    return host, int(port_text)


# --- DNS ----------------------------------------------------------------------------------


class DnsError(Exception):
    """DNS could not answer (timeout, SERVFAIL, no resolver configured...)."""


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str  # host name, without the final dot


@dataclass(frozen=True, slots=True)
class SrvAnswer:
    """The records found (none: the name or record does not exist) and for how long they
    may be cached, in seconds."""

    records: tuple[SrvRecord, ...]
    ttl: float


class SrvLookup(Protocol):
    async def lookup_srv(self, name: str) -> SrvAnswer:
        """The SRV records of ``name`` (``_matrix-fed._tcp.example.com``); raises DnsError."""
        ...


class DnspythonSrvLookup:
    """``SrvLookup`` with dnspython's asyncio resolver (the system's nameservers)."""

    def __init__(
        self, resolver: dns.asyncresolver.Resolver | None = None, *, timeout: float = 10.0
    ) -> None:
        self._resolver = resolver
        self._timeout = timeout

    async def lookup_srv(self, name: str) -> SrvAnswer:
        # dnspython only on the first lookup: importing it costs about 3 MiB of RSS, and a
        # server that never federates never needs it (issue 15).
        import dns.asyncresolver
        import dns.exception
        import dns.name
        import dns.rdatatype
        import dns.rdtypes.IN.SRV
        import dns.resolver

        try:
            if self._resolver is None:
                self._resolver = dns.asyncresolver.Resolver()  # reads /etc/resolv.conf
            answer = await self._resolver.resolve(
                dns.name.from_text(name),  # absolute: no search domains
                dns.rdatatype.SRV,
                raise_on_no_answer=False,
                lifetime=self._timeout,
            )
        except dns.resolver.NXDOMAIN:
            return SrvAnswer((), SRV_NXDOMAIN_TTL)
        except dns.exception.DNSException as exc:
            raise DnsError(f"{type(exc).__name__}: {exc}") from exc
        records = tuple(
            SrvRecord(rdata.priority, rdata.weight, rdata.port, rdata.target.to_text(True))
            for rdata in answer.rrset or ()
            if isinstance(rdata, dns.rdtypes.IN.SRV.SRV)
        )
        return SrvAnswer(records, max(0.0, answer.expiration - time.time()))


def order_srv(records: Sequence[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """RFC 2782 order: by priority; within one, a weighted random order (weight 0 rarely
    first)."""
    ordered: list[SrvRecord] = []
    for priority in sorted({record.priority for record in records}):
        remaining = sorted(
            (r for r in records if r.priority == priority), key=lambda r: r.weight != 0
        )
        while remaining:
            pick = rng.randint(0, sum(r.weight for r in remaining))
            running = 0
            for index, record in enumerate(remaining):
                running += record.weight
                if running >= pick:
                    ordered.append(remaining.pop(index))
                    break
    return ordered


# --- .well-known ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WellKnownResponse:
    """The final (non-redirect) response; ``headers`` have lower-case names."""

    status: int
    body: bytes
    headers: Mapping[str, str]


class WellKnownFetchError(Exception):
    """No response: ``temporary`` for network errors and timeouts; permanent for a body too
    large, too many redirects, a redirect that is not https or a disallowed address."""

    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary


class WellKnownFetcher(Protocol):
    async def fetch(self, hostname: str) -> WellKnownResponse:
        """``GET https://<hostname>/.well-known/matrix/server``, redirects followed;
        raises WellKnownFetchError."""
        ...


class HttpWellKnownFetcher:
    """``WellKnownFetcher`` over HTTPS with aiohttp.

    Certificates are verified (not on test networks), non-public addresses refused (not on
    test networks), https redirects followed by hand (at most ``max_redirects``, no loops),
    the body bounded by ``max_size`` and the whole fetch by ``timeout`` seconds.
    """

    def __init__(
        self,
        *,
        test_network: bool,
        user_agent: str = "Peyvand",
        timeout: float = 10.0,
        max_size: int = WELL_KNOWN_MAX_SIZE,
        max_redirects: int = 5,
        port: int = 443,
    ) -> None:
        """``port`` is where well-known files are fetched from: 443 but in tests."""
        self._test_network = test_network
        self._port = port
        self._user_agent = user_agent
        self._timeout = timeout
        self._max_size = max_size
        self._max_redirects = max_redirects
        self._session: aiohttp.ClientSession | None = None
        self._resolver: AbstractResolver | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        connector, self._resolver = outbound_connector(self._test_network, limit_per_host=2)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
            headers={"User-Agent": self._user_agent, "Accept": "application/json"},
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        resolver, self._resolver = self._resolver, None
        await close_session(session, resolver)

    async def fetch(self, hostname: str) -> WellKnownResponse:
        if self._session is None:
            raise RuntimeError("HttpWellKnownFetcher.start() has not been called")
        url = URL.build(scheme="https", host=hostname, port=self._port, path=WELL_KNOWN_PATH)
        try:
            async with asyncio.timeout(self._timeout):
                return await self._fetch(self._session, url)
        except TimeoutError as exc:
            raise WellKnownFetchError("timed out", temporary=True) from exc
        except aiohttp.ClientConnectorError as exc:
            if is_blocked_error(exc):
                raise WellKnownFetchError(str(exc.os_error), temporary=False) from exc
            raise WellKnownFetchError(f"cannot connect: {exc}", temporary=True) from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise WellKnownFetchError(f"{type(exc).__name__}: {exc}", temporary=True) from exc

    async def _fetch(self, session: aiohttp.ClientSession, url: URL) -> WellKnownResponse:
        seen = {url}
        for _hop in range(self._max_redirects + 1):
            ip = parse_ip(url.host or "")
            if ip is not None and not self._test_network and not is_ip_allowed(ip):
                raise WellKnownFetchError(f"{ip} is not an allowed address", temporary=False)
            async with session.get(url, allow_redirects=False) as resp:
                if resp.status in _REDIRECT_STATUSES and "Location" in resp.headers:
                    url = url.join(URL(resp.headers["Location"])).with_fragment(None)
                    if url.scheme != "https":
                        raise WellKnownFetchError("redirect away from https", temporary=False)
                    if url in seen:
                        raise WellKnownFetchError("redirect loop", temporary=False)
                    seen.add(url)
                    continue
                if resp.content_length is not None and resp.content_length > self._max_size:
                    raise WellKnownFetchError("response too large", temporary=False)
                body = await resp.content.read(self._max_size + 1)
                if len(body) > self._max_size:
                    raise WellKnownFetchError("response too large", temporary=False)
                headers = {name.lower(): value for name, value in resp.headers.items()}
                return WellKnownResponse(resp.status, body, headers)
        raise WellKnownFetchError(f"more than {self._max_redirects} redirects", temporary=False)


def cache_period_from_headers(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds a response may be cached per ``Cache-Control`` / ``Expires``; None if they
    say nothing (as Synapse: ``no-store`` is 0, then ``max-age``, then ``Expires``)."""
    directives: dict[str, str | None] = {}
    for part in headers.get("cache-control", "").split(","):
        name, equals, value = part.strip().partition("=")
        if name:
            directives[name.lower()] = value.strip().strip('"') if equals else None
    if "no-store" in directives:
        return 0.0
    max_age = directives.get("max-age")
    if max_age is not None and max_age.isascii() and max_age.isdigit():
        return float(max_age)
    if "expires" in headers:
        try:
            expires = email.utils.parsedate_to_datetime(headers["expires"])
        except (TypeError, ValueError, IndexError):
            return 0.0  # RFC 9111: an invalid date means "already expired"
        if expires.tzinfo is None:
            return 0.0
        return expires.timestamp() - now
    return None


class _WellKnownFailure(Exception):
    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary


def parse_well_known(body: bytes) -> str:
    """The delegated server name from a well-known body; ValueError when invalid."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    delegated = data.get("m.server")
    if not isinstance(delegated, str):
        raise ValueError("no m.server string")
    try:
        parse_server_name(delegated)
    except DiscoveryError as exc:
        raise ValueError(str(exc)) from exc
    return delegated


# --- caches -------------------------------------------------------------------------------

_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class _Entry(Generic[_V]):
    value: _V
    expires_at: float


class _ExpiringCache(Generic[_V]):
    """A dict of entries that carry their own expiry; expired entries stay until evicted
    (stale answers are useful when DNS fails). At most ``max_entries``: expired ones are
    dropped first, then the oldest."""

    def __init__(self, max_entries: int) -> None:
        self._entries: dict[str, _Entry[_V]] = {}
        self._max_entries = max_entries

    def get(self, key: str) -> _Entry[_V] | None:
        return self._entries.get(key)

    def put(self, key: str, value: _V, expires_at: float, now: float) -> None:
        self._entries.pop(key, None)
        if len(self._entries) >= self._max_entries:
            for stale in [k for k, e in self._entries.items() if e.expires_at <= now]:
                del self._entries[stale]
            while len(self._entries) >= self._max_entries:
                del self._entries[next(iter(self._entries))]
        self._entries[key] = _Entry(value, expires_at)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True, slots=True)
class _WellKnownResult:
    delegated: str | None  # None: no valid well-known
    refresh_at: float  # after this, refetch (a valid result is still served until expiry)
    valid_until: float | None  # when the last valid answer expired (or will)


# --- the resolver -----------------------------------------------------------------------------


class ServerResolver:
    """Resolves server names as the spec says, caching well-known and SRV answers.

    ``dns`` defaults to ``DnspythonSrvLookup()``; ``well_known`` to an
    ``HttpWellKnownFetcher(test_network=test_network)`` that ``start()`` and ``close()``
    open and close (an injected fetcher is the caller's to manage). ``clock`` is wall-clock
    seconds; ``rng`` orders SRV targets and jitters cache lifetimes.
    """

    def __init__(
        self,
        *,
        test_network: bool = False,
        dns: SrvLookup | None = None,
        well_known: WellKnownFetcher | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        max_cache_entries: int = MAX_CACHE_ENTRIES,
    ) -> None:
        self._dns: SrvLookup = dns if dns is not None else DnspythonSrvLookup()
        self._owned_fetcher: HttpWellKnownFetcher | None = None
        if well_known is None:
            self._owned_fetcher = HttpWellKnownFetcher(test_network=test_network)
            well_known = self._owned_fetcher
        self._well_known = well_known
        self._clock = clock
        self._rng = rng or random.Random()
        self._well_known_cache: _ExpiringCache[_WellKnownResult] = _ExpiringCache(max_cache_entries)
        self._srv_cache: _ExpiringCache[tuple[SrvRecord, ...]] = _ExpiringCache(max_cache_entries)
        self._well_known_locks = KeyedLocks()
        self._srv_locks = KeyedLocks()

    async def start(self) -> None:
        if self._owned_fetcher is not None:
            await self._owned_fetcher.start()

    async def close(self) -> None:
        if self._owned_fetcher is not None:
            await self._owned_fetcher.close()

    async def resolve(self, server_name: ServerName) -> ResolvedServer:
        """The first place to try for ``server_name``."""
        return (await self.resolve_all(server_name))[0]

    async def resolve_all(self, server_name: ServerName) -> list[ResolvedServer]:
        """Where to reach ``server_name``, in the order to try (never empty)."""
        host, port = parse_server_name(server_name)
        # 1. An IP literal: that address; Host is the server name as given.
        if parse_ip(host) is not None:
            return [ResolvedServer(host, port or DEFAULT_PORT, server_name, host)]
        # 2. A host name with an explicit port.
        if port is not None:
            return [ResolvedServer(host, port, server_name, host)]
        # 3. .well-known delegation.
        delegated = await self._delegated_server(host.lower())
        if delegated is not None:
            d_host, d_port = parse_server_name(delegated)
            if parse_ip(d_host) is not None:  # 3.1
                return [ResolvedServer(d_host, d_port or DEFAULT_PORT, delegated, d_host)]
            if d_port is not None:  # 3.2
                return [ResolvedServer(d_host, d_port, delegated, d_host)]
            return await self._srv_or_default(d_host)  # 3.3 - 3.5
        return await self._srv_or_default(host)  # 4 - 6

    async def _srv_or_default(self, hostname: str) -> list[ResolvedServer]:
        """SRV ``_matrix-fed._tcp`` then ``_matrix._tcp`` of ``hostname``, else port 8448;
        ``Host`` and the certificate are ``hostname``'s either way."""
        for service in SRV_SERVICES:
            records = await self._srv(service + hostname.lower())
            if records:
                return [
                    ResolvedServer(record.target, record.port, hostname, hostname)
                    for record in order_srv(records, self._rng)
                ]
        return [ResolvedServer(hostname, DEFAULT_PORT, hostname, hostname)]

    async def _srv(self, name: str) -> tuple[SrvRecord, ...]:
        entry = self._srv_cache.get(name)
        if entry is not None and self._clock() < entry.expires_at:
            return entry.value
        async with self._srv_locks.hold(name):
            entry = self._srv_cache.get(name)
            if entry is not None and self._clock() < entry.expires_at:
                return entry.value
            try:
                answer = await self._dns.lookup_srv(name)
            except DnsError as exc:
                if entry is not None and entry.value:
                    logger.info("SRV lookup of %s failed (%s); using the stale answer", name, exc)
                    return entry.value
                raise DiscoveryError(f"SRV lookup of {name} failed: {exc}") from exc
            # "." alone means "no such service" (RFC 2782): as if there were no records.
            records = tuple(r for r in answer.records if r.target not in ("", "."))
            if records:
                ttl = min(max(answer.ttl, SRV_MIN_CACHE), SRV_MAX_CACHE)
            else:
                ttl = min(max(answer.ttl, SRV_MIN_CACHE), SRV_NEGATIVE_MAX_CACHE)
            now = self._clock()
            self._srv_cache.put(name, records, now + ttl, now)
            return records

    async def _delegated_server(self, hostname: str) -> str | None:
        """The ``m.server`` of ``hostname``'s well-known, or None; cached."""
        entry = self._well_known_cache.get(hostname)
        if entry is not None and self._clock() < entry.value.refresh_at:
            return entry.value.delegated
        async with self._well_known_locks.hold(hostname):
            entry = self._well_known_cache.get(hostname)
            if entry is not None and self._clock() < entry.value.refresh_at:
                return entry.value.delegated
            try:
                delegated, period = await self._fetch_well_known(hostname)
            except _WellKnownFailure as failure:
                return self._remember_failure(hostname, entry, failure)
            now = self._clock()
            if period is None:
                period = WELL_KNOWN_DEFAULT_CACHE * self._jitter()
            else:
                period = min(max(period, WELL_KNOWN_MIN_CACHE), WELL_KNOWN_MAX_CACHE)
            refresh_at = now + period * (1 - WELL_KNOWN_GRACE_FACTOR)
            result = _WellKnownResult(delegated, refresh_at, now + period)
            self._well_known_cache.put(hostname, result, now + period, now)
            return delegated

    def _remember_failure(
        self, hostname: str, entry: _Entry[_WellKnownResult] | None, failure: _WellKnownFailure
    ) -> str | None:
        now = self._clock()
        previous = entry.value if entry is not None else None
        if (
            failure.temporary
            and entry is not None
            and entry.value.delegated is not None
            and now < entry.expires_at
        ):
            # Refreshing a still-valid result failed for now: keep using it, and try again
            # in a while rather than on every request.
            logger.info("well-known of %s: %s; keeping the cached result", hostname, failure)
            retry_at = min(now + WELL_KNOWN_DOWN_CACHE, entry.expires_at)
            kept = _WellKnownResult(entry.value.delegated, retry_at, entry.value.valid_until)
            self._well_known_cache.put(hostname, kept, entry.expires_at, now)
            return entry.value.delegated
        logger.info("no valid well-known for %s: %s", hostname, failure)
        valid_until = previous.valid_until if previous is not None else None
        if valid_until is not None and now < valid_until + WELL_KNOWN_REMEMBER_VALID:
            period = WELL_KNOWN_DOWN_CACHE
        else:
            period = WELL_KNOWN_INVALID_CACHE
        period *= self._jitter()
        self._well_known_cache.put(
            hostname, _WellKnownResult(None, now + period, valid_until), now + period, now
        )
        return None

    async def _fetch_well_known(self, hostname: str) -> tuple[str, float | None]:
        """The delegated name and the cache period the headers ask for (None: unsaid)."""
        try:
            response = await self._well_known.fetch(hostname)
        except WellKnownFetchError as exc:
            raise _WellKnownFailure(str(exc), temporary=exc.temporary) from exc
        if 500 <= response.status < 600:
            raise _WellKnownFailure(f"HTTP {response.status}", temporary=True)
        if response.status != 200:
            raise _WellKnownFailure(f"HTTP {response.status}", temporary=False)
        if len(response.body) > WELL_KNOWN_MAX_SIZE:
            raise _WellKnownFailure("response too large", temporary=False)
        try:
            delegated = parse_well_known(response.body)
        except ValueError as exc:
            raise _WellKnownFailure(f"invalid response: {exc}", temporary=False) from exc
        return delegated, cache_period_from_headers(response.headers, self._clock())

    def _jitter(self) -> float:
        return self._rng.uniform(1 - WELL_KNOWN_CACHE_JITTER, 1 + WELL_KNOWN_CACHE_JITTER)
