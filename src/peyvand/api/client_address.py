"""The address of the client a request comes from, behind trusted reverse proxies.

A request's socket peer is its client, unless that peer is one of the config's
``http.trusted_proxies`` (nginx in front of the server): then the client is the
right-most ``X-Forwarded-For`` address that is not a trusted proxy (each proxy appends
the address it heard from, so only the addresses the trusted ones added can be
believed; what a client wrote to the left of them can be anything). The header of an
untrusted peer is never read. This is nginx's ``real_ip_recursive`` and Synapse's
``x_forwarded`` with its trusted proxies.

``forwarded_middleware`` is the one place that computes it: every later user of
``request.remote`` (the per-IP rate limits of login and registration, an application
service's ``ip_range_whitelist``) reads the client's address. With no trusted proxy the
middleware is not installed and ``request.remote`` is the socket peer, as before.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from peyvand.netguard import IPNetwork, in_networks, peer_address


def trusted_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """The networks ``cidrs`` names (checked by the config loader)."""
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: Sequence[IPNetwork]
) -> str | None:
    """The client's address, given the socket ``peer``, the request's ``X-Forwarded-For``
    header values in order and the ``trusted`` proxies' networks. A malformed entry ends
    the walk: the last trusted hop before it is the client. When every entry is trusted
    the left-most one is."""
    current = peer_address(peer)
    if current is None or not in_networks(current, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        address = peer_address(hop)
        if address is None:
            break
        current = address
        if not in_networks(current, trusted):
            break
    return str(current)


def forwarded_middleware(trusted: Sequence[IPNetwork]) -> Middleware:
    """A middleware that hands the handlers the request with ``remote`` set to its
    client's address (``client_address``)."""

    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        forwarded_for = request.headers.getall("X-Forwarded-For", ())
        address = client_address(request.remote, forwarded_for, trusted)
        if address is not None and address != request.remote:
            request = request.clone(remote=address)
        return await handler(request)

    return forwarded
