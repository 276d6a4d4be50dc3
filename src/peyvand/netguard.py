"""Which addresses the server may connect to on behalf of others (SSRF guard).

Shared by everything that opens connections to hosts that someone else names: URL previews
(``media/preview.py``), push gateways (``federation/push_gateway.py``) and federation
(``federation/client.py``, ``federation/discovery.py``).

- ``is_ip_allowed`` judges one address: public unicast yes, anything private, loopback,
  link-local, reserved, ... no (unless the operator allowed its network);
- ``FilteringResolver`` wraps an aiohttp resolver and keeps only allowed addresses, so the
  connector connects to an address that was checked (no second lookup: DNS rebinding gains
  nothing); when nothing is left it raises ``AddressBlocked``, which aiohttp wraps in a
  ``ClientConnectorError`` (``is_blocked_error`` recognises it);
- aiohttp never hands IP-literal hosts to the resolver: callers check those with
  ``parse_ip`` and ``is_ip_allowed`` before each request;
- ``guarded_session`` is a client session whose connector resolves through a
  ``FilteringResolver``; ``close_session`` closes a session and then its resolver.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64_WELL_KNOWN: Final = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052
_NAT64_LOCAL_USE: Final = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215
_IPV4_COMPATIBLE: Final = ipaddress.IPv6Network("::/96")  # deprecated, RFC 4291 2.5.5.1


def in_networks(ip: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    """Whether ``ip`` is in one of ``networks`` (of its own IP version)."""
    return any(ip.version == net.version and ip in net for net in networks)


def _is_public_unicast(ip: IPAddress) -> bool:
    if not ip.is_global:
        return False
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    ):
        return False
    return not (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)


def is_ip_allowed(ip: IPAddress, allowed: tuple[IPNetwork, ...] = ()) -> bool:
    """Whether the server may connect to ``ip``.

    Public unicast addresses are allowed; private, loopback, link-local, multicast, reserved,
    unspecified, shared (100.64/10), site-local, unique-local, documentation and the
    IPv4-mapped / 6to4 / Teredo / NAT64 forms of those are blocked, unless the address (or the
    IPv4 address it embeds) is inside one of ``allowed``.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        ip = ipaddress.IPv6Address(int(ip))  # "fe80::1%eth0": judge the address itself
    if in_networks(ip, allowed):
        return True
    if isinstance(ip, ipaddress.IPv4Address):
        return _is_public_unicast(ip)

    # IPv6 forms that stand for an IPv4 address are judged by that address alone.
    if ip.ipv4_mapped is not None:
        return is_ip_allowed(ip.ipv4_mapped, allowed)
    if ip in _NAT64_WELL_KNOWN:
        return is_ip_allowed(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), allowed)
    if ip in _NAT64_LOCAL_USE or ip in _IPV4_COMPATIBLE:
        return False
    # Tunnels: both the IPv6 address and what it tunnels to must be acceptable.
    if ip.sixtofour is not None and not is_ip_allowed(ip.sixtofour, allowed):
        return False
    if ip.teredo is not None and not all(is_ip_allowed(a, allowed) for a in ip.teredo):
        return False
    return _is_public_unicast(ip)


def parse_ip(host: str) -> IPAddress | None:
    """``host`` as an IP address (no brackets), or None when it is not an IP literal."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def peer_address(text: str | None) -> IPAddress | None:
    """A connection's peer as an IP address: brackets dropped, and an IPv4 peer's
    IPv4-mapped form on a dual-stack listener (``::ffff:a.b.c.d``) as the IPv4 address;
    None when ``text`` is not an IP literal."""
    if not text:
        return None
    address = parse_ip(text.removeprefix("[").removesuffix("]"))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class AddressBlocked(OSError):
    """Raised by ``FilteringResolver``; aiohttp wraps it in a ClientConnectorError."""


def is_blocked_error(exc: BaseException) -> bool:
    """True if ``exc`` (an aiohttp ClientConnectorError) comes from ``AddressBlocked``."""
    return isinstance(getattr(exc, "os_error", None), AddressBlocked) or isinstance(
        exc.__cause__, AddressBlocked
    )


class FilteringResolver(AbstractResolver):
    """Resolves with ``inner`` and keeps only the addresses ``is_ip_allowed`` accepts."""

    def __init__(self, inner: AbstractResolver, allowed: tuple[IPNetwork, ...] = ()) -> None:
        self._inner = inner
        self._allowed = allowed

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        kept = []
        for result in results:
            ip = parse_ip(result["host"])
            if ip is not None and is_ip_allowed(ip, self._allowed):
                kept.append(result)
        if not kept:
            raise AddressBlocked(f"{host} resolves only to disallowed addresses")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def guarded_session(
    allowed: tuple[IPNetwork, ...],
    resolver: AbstractResolver | None,
    *,
    limit: int,
    limit_per_host: int,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> tuple[aiohttp.ClientSession, FilteringResolver]:
    """A session whose connector connects only to addresses ``is_ip_allowed`` accepts, as
    ``resolver`` (aiohttp's default if None) resolves them, and that filtering resolver.
    No cookies are kept, no proxy settings read from the environment; every request is
    bounded by ``timeout`` seconds. Close both with ``close_session``."""
    filtering = FilteringResolver(resolver or aiohttp.DefaultResolver(), allowed)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            resolver=filtering, limit=limit, limit_per_host=limit_per_host
        ),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        timeout=aiohttp.ClientTimeout(total=timeout),
        headers=headers,
    )
    return session, filtering


async def close_session(
    session: aiohttp.ClientSession | None, resolver: AbstractResolver | None
) -> None:
    """Close ``session``, then ``resolver`` (aiohttp closes only the resolvers it made)."""
    if session is not None:
        await session.close()
    if resolver is not None:
        await resolver.close()
