"""Server discovery (Server-Server API, "Resolving server names") with fake DNS and a fake
well-known fetcher; the dnspython adapter against a DNS server on loopback; the HTTP
well-known fetcher against an HTTPS server on loopback. Nothing leaves the machine."""

from __future__ import annotations

import asyncio
import random
import socket
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import dns.asyncresolver
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from aiohttp import web

from peyvand.federation.discovery import (
    DEFAULT_PORT,
    DiscoveryError,
    DnsError,
    DnspythonSrvLookup,
    HttpWellKnownFetcher,
    ResolvedServer,
    ServerResolver,
    SrvAnswer,
    SrvRecord,
    WellKnownFetchError,
    WellKnownResponse,
    cache_period_from_headers,
    order_srv,
    parse_server_name,
)
from peyvand.federation.tls import generate_self_signed, server_ssl_context
from peyvand.types import ServerName

HOUR = 3600.0

# --- fakes ------------------------------------------------------------------------------------


class FakeDns:
    """SRV answers from a table; a name that is absent has no records (TTL 60)."""

    def __init__(self, answers: dict[str, SrvAnswer | Exception] | None = None) -> None:
        self.answers: dict[str, SrvAnswer | Exception] = answers or {}
        self.asked: list[str] = []

    async def lookup_srv(self, name: str) -> SrvAnswer:
        self.asked.append(name)
        answer = self.answers.get(name, SrvAnswer((), 60.0))
        if isinstance(answer, Exception):
            raise answer
        return answer


def srv(*records: tuple[int, int, int, str], ttl: float = 300.0) -> SrvAnswer:
    return SrvAnswer(tuple(SrvRecord(*record) for record in records), ttl)


def ok(body: bytes | str, **headers: str) -> WellKnownResponse:
    data = body.encode() if isinstance(body, str) else body
    return WellKnownResponse(
        200, data, {k.replace("_", "-").lower(): v for k, v in headers.items()}
    )


class FakeWellKnown:
    """Responses from a table; a host that is absent answers 404."""

    def __init__(
        self, responses: dict[str, WellKnownResponse | WellKnownFetchError] | None = None
    ) -> None:
        self.responses: dict[str, WellKnownResponse | WellKnownFetchError] = responses or {}
        self.asked: list[str] = []
        self.delay = 0.0

    async def fetch(self, hostname: str) -> WellKnownResponse:
        self.asked.append(hostname)
        if self.delay:
            await asyncio.sleep(self.delay)
        response = self.responses.get(hostname, WellKnownResponse(404, b"", {}))
        if isinstance(response, WellKnownFetchError):
            raise response
        return response


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def make_resolver(
    dns: FakeDns | None = None, well_known: FakeWellKnown | None = None, clock: Clock | None = None
) -> tuple[ServerResolver, FakeDns, FakeWellKnown, Clock]:
    dns = dns or FakeDns()
    well_known = well_known or FakeWellKnown()
    clock = clock or Clock()
    resolver = ServerResolver(dns=dns, well_known=well_known, clock=clock, rng=random.Random(7))
    return resolver, dns, well_known, clock


# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("example.org", ("example.org", None)),
        ("example.org:8449", ("example.org", 8449)),
        ("1.2.3.4", ("1.2.3.4", None)),
        ("1.2.3.4:1", ("1.2.3.4", 1)),
        ("[::1]", ("::1", None)),
        ("[2001:db8::1]:65535", ("2001:db8::1", 65535)),
        ("localhost", ("localhost", None)),
    ],
)
def test_parse_server_name(name: str, parsed: tuple[str, int | None]) -> None:
    assert parse_server_name(name) == parsed


@pytest.mark.parametrize(
    "name",
    [
        "",
        "example.org:",
        "example.org:0",
        "example.org:65536",
        "example.org:80a",
        "example.org:+80",
        "exa mple.org",
        "example.org/path",
        "ex_ample.org",
        "::1",  # IPv6 needs brackets
        "[::1",
        "[::1]x",
        "[1.2.3.4]",
        "[nothex]",
        "1.2.3.999",
        "user@example.org",
        "a" * 256,
    ],
)
async def test_invalid_server_names_are_refused(name: ServerName) -> None:
    with pytest.raises(DiscoveryError):
        parse_server_name(name)
    resolver, dns, well_known, _ = make_resolver()
    with pytest.raises(DiscoveryError):
        await resolver.resolve(name)
    assert dns.asked == well_known.asked == []


# --- steps 1 and 2: no lookups ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("1.2.3.4", ResolvedServer("1.2.3.4", DEFAULT_PORT, "1.2.3.4", "1.2.3.4")),
        ("1.2.3.4:8449", ResolvedServer("1.2.3.4", 8449, "1.2.3.4:8449", "1.2.3.4")),
        ("[2001:db8::1]", ResolvedServer("2001:db8::1", 8448, "[2001:db8::1]", "2001:db8::1")),
        (
            "[2001:db8::1]:443",
            ResolvedServer("2001:db8::1", 443, "[2001:db8::1]:443", "2001:db8::1"),
        ),
        (
            "example.org:8449",
            ResolvedServer("example.org", 8449, "example.org:8449", "example.org"),
        ),
    ],
)
async def test_ip_literals_and_explicit_ports_need_no_lookup(
    name: ServerName, expected: ResolvedServer
) -> None:
    resolver, dns, well_known, _ = make_resolver(
        FakeDns({"_matrix-fed._tcp.example.org": srv((0, 0, 1, "srv.example.org"))}),
        FakeWellKnown({"example.org": ok('{"m.server": "elsewhere.org"}')}),
    )
    assert await resolver.resolve_all(name) == [expected]
    assert dns.asked == well_known.asked == []


# --- step 3: well-known delegation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("delegated", "expected"),
    [
        # 3.1: an IP literal, with or without port; Host is the delegated name
        ("5.6.7.8", ResolvedServer("5.6.7.8", 8448, "5.6.7.8", "5.6.7.8")),
        ("5.6.7.8:443", ResolvedServer("5.6.7.8", 443, "5.6.7.8:443", "5.6.7.8")),
        ("[2001:db8::2]:9", ResolvedServer("2001:db8::2", 9, "[2001:db8::2]:9", "2001:db8::2")),
        # 3.2: host name and port
        (
            "matrix.example.org:443",
            ResolvedServer(
                "matrix.example.org", 443, "matrix.example.org:443", "matrix.example.org"
            ),
        ),
        # 3.5: no SRV records for the delegated name: port 8448
        (
            "matrix.example.org",
            ResolvedServer("matrix.example.org", 8448, "matrix.example.org", "matrix.example.org"),
        ),
    ],
)
async def test_well_known_delegation(delegated: str, expected: ResolvedServer) -> None:
    resolver, dns, well_known, _ = make_resolver(
        FakeDns({"_matrix-fed._tcp.example.org": srv((0, 0, 1, "ignored.example.org"))}),
        FakeWellKnown({"example.org": ok(f'{{"m.server": "{delegated}"}}')}),
    )
    assert await resolver.resolve_all(ServerName("example.org")) == [expected]
    assert well_known.asked == ["example.org"]
    if expected.port == 8448 and expected.host == "matrix.example.org":
        assert dns.asked == [
            "_matrix-fed._tcp.matrix.example.org",
            "_matrix._tcp.matrix.example.org",
        ]
    else:
        assert dns.asked == []  # the server name's own SRV records are not consulted


async def test_delegated_name_srv_matrix_fed() -> None:
    """3.3: SRV of the delegated name; Host and certificate stay the delegated name."""
    resolver, dns, _, _ = make_resolver(
        FakeDns(
            {
                "_matrix-fed._tcp.matrix.example.org": srv((10, 0, 8443, "fed1.example.net")),
                "_matrix._tcp.matrix.example.org": srv((10, 0, 1, "old.example.net")),
            }
        ),
        FakeWellKnown({"example.org": ok('{"m.server": "matrix.example.org"}')}),
    )
    assert await resolver.resolve_all(ServerName("example.org")) == [
        ResolvedServer("fed1.example.net", 8443, "matrix.example.org", "matrix.example.org")
    ]
    assert dns.asked == ["_matrix-fed._tcp.matrix.example.org"]


async def test_delegated_name_deprecated_srv() -> None:
    """3.4: ``_matrix._tcp`` when there is no ``_matrix-fed._tcp`` record."""
    resolver, dns, _, _ = make_resolver(
        FakeDns({"_matrix._tcp.matrix.example.org": srv((10, 0, 8444, "old.example.net"))}),
        FakeWellKnown({"example.org": ok('{"m.server": "matrix.example.org"}')}),
    )
    assert await resolver.resolve_all(ServerName("example.org")) == [
        ResolvedServer("old.example.net", 8444, "matrix.example.org", "matrix.example.org")
    ]
    assert dns.asked == ["_matrix-fed._tcp.matrix.example.org", "_matrix._tcp.matrix.example.org"]


# --- steps 4 to 6: no (valid) well-known ------------------------------------------------------


async def test_srv_matrix_fed_of_the_server_name() -> None:
    resolver, dns, well_known, _ = make_resolver(
        FakeDns({"_matrix-fed._tcp.example.org": srv((0, 0, 8448, "fed.example.org"))})
    )
    assert await resolver.resolve_all(ServerName("example.org")) == [
        ResolvedServer("fed.example.org", 8448, "example.org", "example.org")
    ]
    assert well_known.asked == ["example.org"]
    assert dns.asked == ["_matrix-fed._tcp.example.org"]


async def test_deprecated_srv_of_the_server_name() -> None:
    resolver, dns, _, _ = make_resolver(
        FakeDns({"_matrix._tcp.example.org": srv((0, 0, 443, "old.example.org"))})
    )
    assert await resolver.resolve_all(ServerName("example.org")) == [
        ResolvedServer("old.example.org", 443, "example.org", "example.org")
    ]
    assert dns.asked == ["_matrix-fed._tcp.example.org", "_matrix._tcp.example.org"]


async def test_no_delegation_at_all_means_port_8448() -> None:
    resolver, _, _, _ = make_resolver()
    assert await resolver.resolve(ServerName("Example.org")) == ResolvedServer(
        "Example.org", 8448, "Example.org", "Example.org"
    )


async def test_srv_target_dot_means_no_service() -> None:
    resolver, _, _, _ = make_resolver(
        FakeDns({"_matrix-fed._tcp.example.org": srv((0, 0, 0, "."))})
    )
    assert await resolver.resolve(ServerName("example.org")) == ResolvedServer(
        "example.org", 8448, "example.org", "example.org"
    )


@pytest.mark.parametrize(
    "response",
    [
        ok("not json"),
        ok("[]"),
        ok("{}"),
        ok('{"m.server": 5}'),
        ok('{"m.server": "bad name!"}'),
        ok('{"m.server": "example.net:99999"}'),
        ok(b"\xff\xfe"),
        ok('{"m.server": "' + "a" * 60_000 + '"}'),  # over 50 KiB
        WellKnownResponse(404, b'{"m.server": "x.org"}', {}),
        WellKnownResponse(302, b'{"m.server": "x.org"}', {}),
        WellKnownResponse(500, b'{"m.server": "x.org"}', {}),
        WellKnownFetchError("connection refused", temporary=True),
        WellKnownFetchError("too large", temporary=False),
    ],
)
async def test_invalid_well_known_falls_back_to_srv(
    response: WellKnownResponse | WellKnownFetchError,
) -> None:
    resolver, _, _, _ = make_resolver(
        FakeDns({"_matrix-fed._tcp.example.org": srv((0, 0, 8448, "fed.example.org"))}),
        FakeWellKnown({"example.org": response}),
    )
    assert await resolver.resolve(ServerName("example.org")) == ResolvedServer(
        "fed.example.org", 8448, "example.org", "example.org"
    )


async def test_dns_failure_without_a_cached_answer_is_an_error() -> None:
    resolver, _, _, _ = make_resolver(
        FakeDns({"_matrix-fed._tcp.example.org": DnsError("SERVFAIL")})
    )
    with pytest.raises(DiscoveryError, match="SERVFAIL"):
        await resolver.resolve(ServerName("example.org"))


# --- SRV order ----------------------------------------------------------------------------------


async def test_srv_targets_come_in_priority_order() -> None:
    resolver, _, _, _ = make_resolver(
        FakeDns(
            {
                "_matrix-fed._tcp.example.org": srv(
                    (20, 0, 3, "c.example.org"),
                    (10, 5, 1, "a.example.org"),
                    (10, 5, 2, "b.example.org"),
                )
            }
        )
    )
    servers = await resolver.resolve_all(ServerName("example.org"))
    assert {s.host for s in servers[:2]} == {"a.example.org", "b.example.org"}
    assert servers[2] == ResolvedServer("c.example.org", 3, "example.org", "example.org")
    assert all((s.host_header, s.tls_server_name) == ("example.org",) * 2 for s in servers)


def test_order_srv_follows_weights() -> None:
    heavy = SrvRecord(1, 90, 1, "heavy")
    light = SrvRecord(1, 10, 1, "light")
    zero = SrvRecord(1, 0, 1, "zero")
    backup = SrvRecord(2, 100, 1, "backup")
    rng = random.Random(1)
    firsts = [order_srv([backup, zero, light, heavy], rng)[0].target for _ in range(2000)]
    assert firsts.count("heavy") > 1500
    assert 100 < firsts.count("light") < 350
    assert firsts.count("zero") < 30
    assert "backup" not in firsts
    for _ in range(20):
        ordered = order_srv([backup, zero, light, heavy], rng)
        assert ordered[-1] == backup and sorted(r.target for r in ordered[:3]) == [
            "heavy",
            "light",
            "zero",
        ]


# --- well-known caching ---------------------------------------------------------------------


def delegating(name: str = "example.org", **headers: str) -> FakeWellKnown:
    return FakeWellKnown({name: ok('{"m.server": "matrix.example.org:443"}', **headers)})


async def fetches_after(
    resolver: ServerResolver, well_known: FakeWellKnown, clock: Clock, seconds: float
) -> int:
    """How many fetches resolving made after ``seconds`` more (from a fresh first fetch)."""
    before = len(well_known.asked)
    clock.now += seconds
    await resolver.resolve(ServerName("example.org"))
    return len(well_known.asked) - before


async def test_well_known_is_cached_24_hours_by_default() -> None:
    resolver, _, well_known, clock = make_resolver(well_known=delegating())
    await resolver.resolve(ServerName("example.org"))
    await resolver.resolve(ServerName("example.org"))
    assert well_known.asked == ["example.org"]
    # 24 h with 10 % jitter, refreshed during the last 20 %: never before 0.8 * 0.9 * 24 h
    assert await fetches_after(resolver, well_known, clock, 0.8 * 0.9 * 24 * HOUR - 60) == 0
    assert await fetches_after(resolver, well_known, clock, 0.2 * 24 * HOUR + 120) == 1


@pytest.mark.parametrize(
    ("cache_control", "lifetime"),
    [
        ("max-age=7200", 7200.0),
        ('public, max-age="7200"', 7200.0),
        ("max-age=10", 300.0),  # at least 5 minutes
        ("no-store", 300.0),
        ("max-age=9999999", 48 * HOUR),  # at most 48 hours
    ],
)
async def test_well_known_cache_control(cache_control: str, lifetime: float) -> None:
    resolver, _, well_known, clock = make_resolver(
        well_known=delegating(cache_control=cache_control)
    )
    await resolver.resolve(ServerName("example.org"))
    assert await fetches_after(resolver, well_known, clock, 0.8 * lifetime - 1) == 0
    assert await fetches_after(resolver, well_known, clock, 2) == 1


async def test_well_known_expires_header() -> None:
    clock = Clock()
    expires = datetime.fromtimestamp(clock.now, UTC) + timedelta(hours=3)
    resolver, _, well_known, _ = make_resolver(
        well_known=delegating(expires=format_datetime(expires, usegmt=True)), clock=clock
    )
    await resolver.resolve(ServerName("example.org"))
    assert await fetches_after(resolver, well_known, clock, 0.8 * 3 * HOUR - 1) == 0
    assert await fetches_after(resolver, well_known, clock, 2) == 1


def test_cache_period_from_headers() -> None:
    now = 1_700_000_000.0
    assert cache_period_from_headers({}, now) is None
    assert cache_period_from_headers({"cache-control": "public"}, now) is None
    assert cache_period_from_headers({"cache-control": "max-age=60"}, now) == 60
    assert cache_period_from_headers({"cache-control": "MAX-AGE=60, no-store"}, now) == 0
    assert cache_period_from_headers({"cache-control": "max-age=abc"}, now) is None
    assert cache_period_from_headers({"expires": "0"}, now) == 0  # invalid: already expired
    later = format_datetime(datetime.fromtimestamp(now + 90, UTC), usegmt=True)
    assert cache_period_from_headers({"expires": later}, now) == pytest.approx(90)
    both = {"cache-control": "max-age=30", "expires": later}
    assert cache_period_from_headers(both, now) == 30


async def test_failures_are_cached_about_an_hour() -> None:
    resolver, _, well_known, clock = make_resolver()  # 404
    await resolver.resolve(ServerName("example.org"))
    assert await fetches_after(resolver, well_known, clock, 0.9 * HOUR - 60) == 0
    assert await fetches_after(resolver, well_known, clock, 0.2 * HOUR + 60) == 1


async def test_temporary_failure_during_refresh_keeps_the_cached_result() -> None:
    resolver, _, well_known, clock = make_resolver(
        well_known=delegating(cache_control="max-age=36000")
    )
    first = await resolver.resolve(ServerName("example.org"))
    assert first.host == "matrix.example.org"
    well_known.responses["example.org"] = WellKnownFetchError("timed out", temporary=True)

    clock.now += 0.85 * 36000  # in the last 20 %: refetched, failure, old result kept
    assert await resolver.resolve(ServerName("example.org")) == first
    assert len(well_known.asked) == 2
    clock.now += 60  # and not refetched on every request
    assert await resolver.resolve(ServerName("example.org")) == first
    assert len(well_known.asked) == 2
    clock.now += 120
    assert await resolver.resolve(ServerName("example.org")) == first
    assert len(well_known.asked) == 3

    clock.now += 0.15 * 36000 + 1  # expired: the failure wins
    assert (await resolver.resolve(ServerName("example.org"))).port == 8448
    assert len(well_known.asked) == 4
    # ... but is remembered only briefly, as the server had a valid answer lately
    well_known.responses["example.org"] = ok('{"m.server": "matrix.example.org:443"}')
    clock.now += 0.9 * 120 - 1
    assert (await resolver.resolve(ServerName("example.org"))).port == 8448
    clock.now += 0.2 * 120 + 2
    assert await resolver.resolve(ServerName("example.org")) == first


async def test_permanent_failure_during_refresh_drops_the_result() -> None:
    resolver, _, well_known, clock = make_resolver(
        well_known=delegating(cache_control="max-age=36000")
    )
    await resolver.resolve(ServerName("example.org"))
    well_known.responses["example.org"] = WellKnownResponse(404, b"", {})
    clock.now += 0.85 * 36000
    assert (await resolver.resolve(ServerName("example.org"))).port == 8448


async def test_concurrent_resolutions_share_one_fetch() -> None:
    resolver, _, well_known, _ = make_resolver(well_known=delegating())
    well_known.delay = 0.05
    results = await asyncio.gather(
        *(resolver.resolve(ServerName("example.org")) for _ in range(10))
    )
    assert len(set(results)) == 1
    assert well_known.asked == ["example.org"]


async def test_well_known_hostname_is_case_insensitive() -> None:
    resolver, _, well_known, _ = make_resolver(well_known=delegating())
    await resolver.resolve(ServerName("Example.ORG"))
    await resolver.resolve(ServerName("example.org"))
    assert well_known.asked == ["example.org"]


async def test_cache_is_bounded() -> None:
    well_known = FakeWellKnown()
    resolver = ServerResolver(dns=FakeDns(), well_known=well_known, max_cache_entries=5)
    for i in range(20):
        await resolver.resolve(ServerName(f"s{i}.example.org"))
    await resolver.resolve(ServerName("s19.example.org"))  # recent: still cached
    assert well_known.asked.count("s19.example.org") == 1
    await resolver.resolve(ServerName("s0.example.org"))  # evicted: fetched again
    assert well_known.asked.count("s0.example.org") == 2


# --- SRV caching ------------------------------------------------------------------------------


async def test_srv_answers_are_cached_for_their_ttl() -> None:
    dns = FakeDns({"_matrix-fed._tcp.example.org": srv((0, 0, 1, "a.example.org"), ttl=600)})
    resolver, _, _, clock = make_resolver(dns)
    await resolver.resolve(ServerName("example.org"))
    clock.now += 599
    await resolver.resolve(ServerName("example.org"))
    assert dns.asked == ["_matrix-fed._tcp.example.org"]
    clock.now += 2
    await resolver.resolve(ServerName("example.org"))
    assert dns.asked == ["_matrix-fed._tcp.example.org"] * 2


async def test_missing_srv_records_are_cached_too() -> None:
    resolver, dns, _, clock = make_resolver()
    await resolver.resolve(ServerName("example.org"))
    await resolver.resolve(ServerName("example.org"))  # the failed well-known is cached as well
    assert dns.asked == ["_matrix-fed._tcp.example.org", "_matrix._tcp.example.org"]
    clock.now += HOUR + 600
    await resolver.resolve(ServerName("example.org"))
    assert len(dns.asked) == 4


async def test_stale_srv_answer_is_used_when_dns_fails() -> None:
    dns = FakeDns({"_matrix-fed._tcp.example.org": srv((0, 0, 1, "a.example.org"), ttl=60)})
    resolver, _, _, clock = make_resolver(dns)
    first = await resolver.resolve(ServerName("example.org"))
    dns.answers["_matrix-fed._tcp.example.org"] = DnsError("timeout")
    clock.now += 3600
    assert await resolver.resolve(ServerName("example.org")) == first
    assert len(dns.asked) == 2


# --- dnspython against a DNS server on loopback --------------------------------------------------


class _DnsServer(asyncio.DatagramProtocol):
    """Answers SRV queries from ``zone``; NXDOMAIN for other names, SERVFAIL for 'fail.'."""

    def __init__(self, zone: dict[str, list[str]]) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text()
        if name.startswith("_fail."):
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name in self.zone:
            response.answer.append(
                dns.rrset.from_text_list(name, 123, "IN", "SRV", self.zone[name])
            )
        elif name.startswith("_none."):  # the name exists, without SRV records
            response.authority.append(
                dns.rrset.from_text(name, 200, "IN", "SOA", ". . 1 2 3 4 200")
            )
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@asynccontextmanager
async def dns_server(zone: dict[str, list[str]]) -> AsyncIterator[dns.asyncresolver.Resolver]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _DnsServer(zone), local_addr=("127.0.0.1", 0), family=socket.AF_INET
    )
    try:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = transport.get_extra_info("sockname")[1]
        yield resolver
    finally:
        transport.close()


async def test_dnspython_lookup() -> None:
    zone = {
        "_matrix-fed._tcp.example.org.": [
            "10 5 8448 fed1.example.org.",
            "20 0 443 fed2.example.org.",
        ]
    }
    async with dns_server(zone) as resolver:
        lookup = DnspythonSrvLookup(resolver, timeout=2.0)
        answer = await lookup.lookup_srv("_matrix-fed._tcp.example.org")
        assert set(answer.records) == {
            SrvRecord(10, 5, 8448, "fed1.example.org"),
            SrvRecord(20, 0, 443, "fed2.example.org"),
        }
        assert 100 < answer.ttl <= 123

        missing = await lookup.lookup_srv("_matrix-fed._tcp.nowhere.example")
        assert missing.records == () and missing.ttl > 0
        no_records = await lookup.lookup_srv("_none.example.org")
        assert no_records.records == () and 0 < no_records.ttl <= 200
        with pytest.raises(DnsError):
            await lookup.lookup_srv("_fail.example.org")

        resolved = await ServerResolver(dns=lookup, well_known=FakeWellKnown()).resolve(
            ServerName("example.org")
        )
        assert resolved == ResolvedServer("fed1.example.org", 8448, "example.org", "example.org")


# --- the HTTP well-known fetcher against HTTPS on loopback --------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "tls.crt", directory / "tls.key"
    generate_self_signed(cert, key, ["localhost", "127.0.0.1"])
    yield cert, key


@asynccontextmanager
async def https_server(
    tls_files: tuple[Path, Path], routes: Callable[[web.Application], None]
) -> AsyncIterator[int]:
    app = web.Application()
    routes(app)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(*tls_files))
    await site.start()
    assert isinstance(site._server, asyncio.Server)
    port: int = site._server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        await runner.cleanup()


def _well_known_routes(app: web.Application) -> None:
    async def good(_: web.Request) -> web.Response:
        return web.json_response(
            {"m.server": "matrix.example.org:443"}, headers={"Cache-Control": "max-age=60"}
        )

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/.well-known/matrix/server-moved")

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def huge(_: web.Request) -> web.Response:
        return web.Response(body=b" " * (60 * 1024))

    async def plain_http(_: web.Request) -> web.Response:
        raise web.HTTPFound("http://127.0.0.1:1/")

    app.router.add_get("/.well-known/matrix/server", moved)
    app.router.add_get("/.well-known/matrix/server-moved", good)
    app.router.add_get("/loop", loop)
    app.router.add_get("/huge", huge)
    app.router.add_get("/http", plain_http)


async def test_http_well_known_fetcher(tls_files: tuple[Path, Path]) -> None:
    async with https_server(tls_files, _well_known_routes) as port:
        fetcher = HttpWellKnownFetcher(test_network=True, port=port, timeout=5.0)
        await fetcher.start()
        try:
            response = await fetcher.fetch("127.0.0.1")  # one redirect followed
            assert response.status == 200
            assert response.headers["cache-control"] == "max-age=60"
            assert b"matrix.example.org:443" in response.body

            resolver = ServerResolver(dns=FakeDns(), well_known=fetcher)
            assert await resolver.resolve(ServerName("localhost")) == ResolvedServer(
                "matrix.example.org", 443, "matrix.example.org:443", "matrix.example.org"
            )
        finally:
            await fetcher.close()


@pytest.mark.parametrize(
    ("path", "error"), [("/loop", "redirect loop"), ("/huge", "too large"), ("/http", "https")]
)
async def test_http_well_known_fetcher_limits(
    tls_files: tuple[Path, Path], path: str, error: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("peyvand.federation.discovery.WELL_KNOWN_PATH", path)
    async with https_server(tls_files, _well_known_routes) as port:
        fetcher = HttpWellKnownFetcher(test_network=True, port=port, timeout=5.0)
        await fetcher.start()
        try:
            with pytest.raises(WellKnownFetchError, match=error) as caught:
                await fetcher.fetch("127.0.0.1")
            assert not caught.value.temporary
        finally:
            await fetcher.close()


async def test_http_well_known_fetcher_guards_addresses(tls_files: tuple[Path, Path]) -> None:
    async with https_server(tls_files, _well_known_routes) as port:
        fetcher = HttpWellKnownFetcher(test_network=False, port=port, timeout=5.0)
        await fetcher.start()
        try:
            with pytest.raises(WellKnownFetchError, match="not an allowed address"):
                await fetcher.fetch("127.0.0.1")
            with pytest.raises(WellKnownFetchError, match="disallowed") as caught:
                await fetcher.fetch("localhost")  # resolves to loopback only
            assert not caught.value.temporary
        finally:
            await fetcher.close()

    closed = HttpWellKnownFetcher(test_network=True, port=port, timeout=5.0)
    await closed.start()
    try:
        with pytest.raises(WellKnownFetchError) as refused:
            await closed.fetch("127.0.0.1")  # nothing listens any more
        assert refused.value.temporary
    finally:
        await closed.close()
