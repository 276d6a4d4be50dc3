"""URL preview plumbing: the SSRF-guarded fetcher against a real loopback server, and the
OpenGraph parser (``GET /_matrix/client/v1/media/preview_url``).

Everything stays on 127.0.0.1; the machine has no internet access and the tests never need it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ipaddress
import json
import socket
import time
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.typedefs import Handler
from hypothesis import given, settings
from hypothesis import strategies as st

from peyvand.media.preview import (
    FetchedResource,
    FetchPolicy,
    PreviewError,
    UrlFetcher,
    is_ip_allowed,
    parse_opengraph,
)

LOOPBACK = (ipaddress.IPv4Network("127.0.0.0/8"),)
MAX_SIZE = 64 * 1024
LOCAL = FetchPolicy(allowed_networks=LOOPBACK, max_size=MAX_SIZE, timeout=1.0, max_redirects=5)

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201e2f1f4a6"
    "0000000049454e44ae426082"
)

OG_PAGE = b"""<!doctype html>
<html><head>
<meta charset="utf-8">
<title>Fallback title</title>
<meta property="og:title" content="  Peyvand &amp; friends  ">
<meta property="og:title" content="second title, ignored">
<meta property="og:description" content="A Matrix homeserver.">
<meta property="og:image" content="/static/logo.png">
<meta property="og:image:width" content="48">
<meta name="og:site_name" content="Peyvand">
</head><body><p>hello</p></body></html>
"""

PLAIN_PAGE = b"""<html><head>
<title>
   Just a   title
</title>
<meta name="description" content="Described the old way.">
</head><body></body></html>
"""

CYRILLIC_TITLE = "Привет, мир"
CP1251_PAGE = f"<html><head><title>{CYRILLIC_TITLE}</title></head></html>".encode("windows-1251")
LATIN1_PAGE = (
    '<html><head><meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">'
    '<meta property="og:title" content="Café crème"></head></html>'
).encode("iso-8859-1")


# --- the loopback server ---------------------------------------------------------------------


@dataclass
class Server:
    port: int
    hits: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _html(body: bytes, charset: str | None = "utf-8") -> web.Response:
    content_type = "text/html" + (f"; charset={charset}" if charset else "")
    return web.Response(body=body, headers={"Content-Type": content_type})


def _redirect(
    location: str, status: int = 302, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(status=status, headers={"Location": location, **(headers or {})})


def _build_app(server: Server) -> web.Application:
    @web.middleware
    async def count_hits(request: web.Request, handler: Handler) -> web.StreamResponse:
        server.hits += 1
        return await handler(request)

    async def og(_: web.Request) -> web.Response:
        return _html(OG_PAGE)

    async def plain(_: web.Request) -> web.Response:
        return _html(PLAIN_PAGE)

    async def redirect(request: web.Request) -> web.Response:
        remaining = int(request.match_info["n"])
        if remaining == 0:
            return _redirect("/og", status=301)
        return _redirect(f"/redirect/{remaining - 1}", status=(302, 303, 307, 308)[remaining % 4])

    async def redirect_to(request: web.Request) -> web.Response:
        return _redirect(request.query["target"])

    async def no_location(_: web.Request) -> web.Response:
        return web.Response(status=302)

    async def large(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * (MAX_SIZE * 3), content_type="text/plain")

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(4 * MAX_SIZE // 4096):
                await response.write(b"y" * 4096)
        except ConnectionError:
            pass  # the client stopped reading, as it should
        return response

    async def small_chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(4):
            await response.write(b"z" * 1000)
        await response.write_eof()
        return response

    async def gzip_bomb(_: web.Request) -> web.Response:
        body = gzip.compress(b"\0" * (MAX_SIZE * 16))
        assert len(body) < MAX_SIZE
        return web.Response(
            body=body, headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"}
        )

    async def gzip_small(_: web.Request) -> web.Response:
        body = gzip.compress(OG_PAGE)
        return web.Response(
            body=body, headers={"Content-Type": "text/html", "Content-Encoding": "gzip"}
        )

    async def slow(_: web.Request) -> web.Response:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):  # released at teardown at the latest
                await server.release.wait()
        return _html(OG_PAGE)

    async def slow_body(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"<html><head>")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await server.release.wait()
        return response

    async def missing(_: web.Request) -> web.Response:
        return web.Response(status=404, text="nothing here")

    async def image(_: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def cp1251(_: web.Request) -> web.Response:
        return _html(CP1251_PAGE, charset="windows-1251")

    async def latin1(_: web.Request) -> web.Response:
        return _html(LATIN1_PAGE, charset=None)

    async def untyped(_: web.Request) -> web.Response:
        response = web.Response(body=b"\x00\x01")
        response.headers.popall("Content-Type", None)
        return response

    async def set_cookie(_: web.Request) -> web.Response:
        return _redirect("/echo", headers={"Set-Cookie": "session=secret; Path=/"})

    async def echo(request: web.Request) -> web.Response:
        headers = {
            "user-agent": request.headers.get("User-Agent"),
            "cookie": request.headers.get("Cookie"),
        }
        return web.Response(text=json.dumps(headers), content_type="application/json")

    app = web.Application(middlewares=[count_hits])
    app.router.add_get("/og", og)
    app.router.add_get("/plain", plain)
    app.router.add_get("/redirect/{n}", redirect)
    app.router.add_get("/redirect-to", redirect_to)
    app.router.add_get("/no-location", no_location)
    app.router.add_get("/large", large)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/small-chunked", small_chunked)
    app.router.add_get("/gzip-bomb", gzip_bomb)
    app.router.add_get("/gzip", gzip_small)
    app.router.add_get("/slow", slow)
    app.router.add_get("/slow-body", slow_body)
    app.router.add_get("/missing", missing)
    app.router.add_get("/image.png", image)
    app.router.add_get("/cp1251", cp1251)
    app.router.add_get("/latin1", latin1)
    app.router.add_get("/untyped", untyped)
    app.router.add_get("/set-cookie", set_cookie)
    app.router.add_get("/echo", echo)
    return app


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[Server]:
    state = Server(port=0)
    runner = web.AppRunner(_build_app(state), shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sockets = [s for s in runner.addresses if isinstance(s, tuple)]
    state.port = sockets[0][1]
    try:
        yield state
    finally:
        state.release.set()
        await runner.cleanup()


@asynccontextmanager
async def running(
    policy: FetchPolicy, resolver: AbstractResolver | None = None
) -> AsyncIterator[UrlFetcher]:
    fetcher = UrlFetcher(policy, resolver=resolver)
    await fetcher.start()
    try:
        yield fetcher
    finally:
        await fetcher.close()


@pytest.fixture
async def fetcher() -> AsyncIterator[UrlFetcher]:
    """Loopback allowed, 64 KiB bodies, 1 s per fetch."""
    async with running(LOCAL) as f:
        yield f


async def expect_error(fetcher: UrlFetcher, url: str, kind: str) -> PreviewError:
    with pytest.raises(PreviewError) as info:
        await fetcher.fetch(url)
    assert info.value.kind == kind, str(info.value)
    return info.value


class FakeResolver(AbstractResolver):
    """Answers from a table, as the system resolver would."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"no such host {host}")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in self.table[host]
        ]

    async def close(self) -> None:
        self.closed = True


# --- fetching: success ---------------------------------------------------------------------


async def test_fetches_html_and_its_opengraph(server: Server, fetcher: UrlFetcher) -> None:
    resource = await fetcher.fetch(server.url("/og#fragment"))
    assert resource == FetchedResource(
        url=server.url("/og"), content_type="text/html", charset="utf-8", data=OG_PAGE
    )
    og = parse_opengraph(resource.data, resource.charset, resource.url)
    assert og == {
        "og:title": "Peyvand & friends",
        "og:description": "A Matrix homeserver.",
        "og:image": server.url("/static/logo.png"),
        "og:image:width": "48",
        "og:site_name": "Peyvand",
    }


async def test_page_without_og_tags_uses_title_and_description(
    server: Server, fetcher: UrlFetcher
) -> None:
    resource = await fetcher.fetch(server.url("/plain"))
    assert parse_opengraph(resource.data, resource.charset, resource.url) == {
        "og:title": "Just a title",
        "og:description": "Described the old way.",
    }


async def test_follows_redirects_up_to_the_limit(server: Server, fetcher: UrlFetcher) -> None:
    # /redirect/4 -> 3 -> 2 -> 1 -> 0 -> /og: five redirects, all of 301/302/303/307/308.
    resource = await fetcher.fetch(server.url("/redirect/4"))
    assert resource.url == server.url("/og")
    assert resource.data == OG_PAGE


async def test_too_many_redirects_fail(server: Server, fetcher: UrlFetcher) -> None:
    error = await expect_error(fetcher, server.url("/redirect/5"), "failed")
    assert "redirects" in error.message
    async with running(FetchPolicy(allowed_networks=LOOPBACK, max_redirects=0)) as strict:
        await expect_error(strict, server.url("/redirect/0"), "failed")
        assert (await strict.fetch(server.url("/og"))).data == OG_PAGE


async def test_image_is_returned_as_bytes(server: Server, fetcher: UrlFetcher) -> None:
    resource = await fetcher.fetch(server.url("/image.png"))
    assert resource.content_type == "image/png"
    assert resource.charset is None
    assert resource.data == PNG


async def test_missing_content_type_is_octet_stream(server: Server, fetcher: UrlFetcher) -> None:
    resource = await fetcher.fetch(server.url("/untyped"))
    assert resource.content_type == "application/octet-stream"
    assert resource.data == b"\x00\x01"


async def test_declared_charset_is_reported_and_used(server: Server, fetcher: UrlFetcher) -> None:
    resource = await fetcher.fetch(server.url("/cp1251"))
    assert resource.charset == "windows-1251"
    assert parse_opengraph(resource.data, resource.charset, resource.url) == {
        "og:title": CYRILLIC_TITLE
    }


async def test_meta_charset_is_used_when_header_has_none(
    server: Server, fetcher: UrlFetcher
) -> None:
    resource = await fetcher.fetch(server.url("/latin1"))
    assert resource.charset is None
    og = parse_opengraph(resource.data, resource.charset, resource.url)
    assert og == {"og:title": "Café crème"}


async def test_compressed_body_is_decompressed(server: Server, fetcher: UrlFetcher) -> None:
    resource = await fetcher.fetch(server.url("/gzip"))
    assert resource.data == OG_PAGE


async def test_chunked_body_under_the_limit(server: Server, fetcher: UrlFetcher) -> None:
    resource = await fetcher.fetch(server.url("/small-chunked"))
    assert resource.data == b"z" * 4000


async def test_sends_user_agent_and_keeps_no_cookies(server: Server, fetcher: UrlFetcher) -> None:
    resource = await fetcher.fetch(server.url("/set-cookie"))
    assert resource.url == server.url("/echo")
    assert json.loads(resource.data) == {"user-agent": LOCAL.user_agent, "cookie": None}
    second = await fetcher.fetch(server.url("/echo"))
    assert json.loads(second.data)["cookie"] is None


# --- fetching: limits and failures -----------------------------------------------------------


async def test_content_length_over_limit_is_refused(server: Server, fetcher: UrlFetcher) -> None:
    error = await expect_error(fetcher, server.url("/large"), "too_large")
    assert "Content-Length" in error.message


async def test_chunked_body_over_limit_is_cut_off(server: Server, fetcher: UrlFetcher) -> None:
    error = await expect_error(fetcher, server.url("/chunked"), "too_large")
    assert str(MAX_SIZE) in error.message


async def test_limit_applies_to_decompressed_size(server: Server, fetcher: UrlFetcher) -> None:
    await expect_error(fetcher, server.url("/gzip-bomb"), "too_large")


async def test_slow_server_times_out(server: Server) -> None:
    policy = FetchPolicy(allowed_networks=LOOPBACK, timeout=0.3)
    async with running(policy) as fetcher:
        for path in ("/slow", "/slow-body"):
            started = time.monotonic()
            error = await expect_error(fetcher, server.url(path), "failed")
            assert time.monotonic() - started < 1.0, path
            assert "timed out" in error.message or "Timeout" in error.message


async def test_http_error_status_fails(server: Server, fetcher: UrlFetcher) -> None:
    error = await expect_error(fetcher, server.url("/missing"), "failed")
    assert "404" in error.message


async def test_redirect_without_location_fails(server: Server, fetcher: UrlFetcher) -> None:
    await expect_error(fetcher, server.url("/no-location"), "failed")


async def test_connection_refused_fails(fetcher: UrlFetcher) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more.
    error = await expect_error(fetcher, f"http://127.0.0.1:{port}/", "failed")
    assert "connect" in error.message


# --- fetching: bad URLs and the SSRF guard ---------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/file",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://user:pw@example.com/",
        "http://:pw@example.com/",
        "not a url",
        "",
        "/relative/path",
        "http:///nohost",
        "http://example.com:99999/",
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f.0.0.1/",
    ],
)
async def test_bad_urls_are_refused(url: str) -> None:
    async with running(FetchPolicy()) as fetcher:
        await expect_error(fetcher, url, "bad_url")


async def test_default_policy_blocks_loopback(server: Server) -> None:
    before = server.hits
    async with running(FetchPolicy()) as fetcher:
        for url in (
            server.url("/og"),  # IP literal: checked before the request
            f"http://[::1]:{server.port}/og",
            f"http://[::ffff:127.0.0.1]:{server.port}/og",
            f"http://localhost:{server.port}/og",  # host name: the resolver refuses it
        ):
            error = await expect_error(fetcher, url, "blocked")
            assert error.kind == "blocked"
    assert server.hits == before, "a blocked fetch must never reach the server"


async def test_resolver_keeps_only_allowed_addresses(server: Server) -> None:
    resolver = FakeResolver(
        {
            "mixed.test": ["127.0.0.2", "127.0.0.1"],
            "other-loopback.test": ["127.0.0.2"],
            "private.test": ["192.168.1.1", "10.0.0.1", "fd00::1"],
        }
    )
    only_server = FetchPolicy(allowed_networks=(ipaddress.IPv4Network("127.0.0.1/32"),))
    async with running(only_server, resolver) as fetcher:
        # 127.0.0.2 is dropped (nothing listens there: connecting to it would fail).
        resource = await fetcher.fetch(f"http://mixed.test:{server.port}/og")
        assert resource.data == OG_PAGE
        await expect_error(fetcher, f"http://other-loopback.test:{server.port}/og", "blocked")
        await expect_error(fetcher, f"http://private.test:{server.port}/og", "blocked")
        await expect_error(fetcher, f"http://unknown.test:{server.port}/og", "failed")
    assert {"mixed.test", "other-loopback.test", "private.test"} <= set(resolver.asked)
    assert resolver.closed


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("http://10.0.0.1/", "blocked"),
        ("http://169.254.169.254/latest/meta-data/", "blocked"),
        ("http://[::1]/", "blocked"),
        ("http://private.test/", "blocked"),
        ("ftp://127.0.0.1/", "bad_url"),
        ("file:///etc/passwd", "bad_url"),
        ("http://user:pw@127.0.0.1/", "bad_url"),
    ],
)
async def test_every_redirect_hop_is_checked(server: Server, target: str, kind: str) -> None:
    resolver = FakeResolver({"private.test": ["192.168.0.10"]})
    async with running(LOCAL, resolver) as fetcher:
        quoted = urllib.parse.quote(target, safe="")
        await expect_error(fetcher, server.url(f"/redirect-to?target={quoted}"), kind)


async def test_fetch_needs_start_and_close_is_idempotent() -> None:
    fetcher = UrlFetcher(FetchPolicy())
    with pytest.raises(RuntimeError):
        await fetcher.fetch("http://example.com/")
    await fetcher.start()
    await fetcher.close()
    await fetcher.close()


def test_preview_error_kinds() -> None:
    error = PreviewError("blocked", "10.0.0.1 is private")
    assert (error.kind, error.message) == ("blocked", "10.0.0.1 is private")
    assert str(error) == "blocked: 10.0.0.1 is private"
    with pytest.raises(ValueError):
        PreviewError("nope", "unknown kind")


# --- is_ip_allowed -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("1.1.1.1", True),
        ("2001:4860:4860::8888", True),
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8
        ("2002:808:808::1", True),  # 6to4 of 8.8.8.8
        ("127.0.0.1", False),
        ("127.255.255.254", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("172.31.255.255", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),  # shared address space (CGNAT)
        ("169.254.169.254", False),  # link-local: cloud metadata
        ("0.0.0.0", False),
        ("0.1.2.3", False),
        ("224.0.0.1", False),
        ("239.255.255.250", False),
        ("255.255.255.255", False),
        ("240.0.0.1", False),
        ("192.0.2.1", False),  # documentation
        ("198.18.0.1", False),  # benchmarking
        ("::", False),
        ("::1", False),
        ("fe80::1", False),
        ("fe80::1%eth0", False),
        ("fec0::1", False),  # site-local
        ("fc00::1", False),
        ("fd12:3456::1", False),
        ("ff02::1", False),
        ("2001:db8::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("::7f00:1", False),  # IPv4-compatible 127.0.0.1
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("2002:c0a8:101::1", False),  # 6to4 of 192.168.1.1
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("64:ff9b:1::808:808", False),  # local-use NAT64 prefix
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
    ],
)
def test_is_ip_allowed(address: str, allowed: bool) -> None:
    assert is_ip_allowed(ipaddress.ip_address(address), ()) is allowed


def test_allowed_networks_are_exceptions() -> None:
    allowed = (ipaddress.IPv4Network("10.20.0.0/16"), ipaddress.IPv6Network("fd00:1::/32"))
    assert is_ip_allowed(ipaddress.ip_address("10.20.3.4"), allowed)
    assert is_ip_allowed(ipaddress.ip_address("::ffff:10.20.3.4"), allowed)
    assert is_ip_allowed(ipaddress.ip_address("fd00:1::5"), allowed)
    assert not is_ip_allowed(ipaddress.ip_address("10.21.0.1"), allowed)
    assert not is_ip_allowed(ipaddress.ip_address("fd00:2::5"), allowed)
    assert not is_ip_allowed(ipaddress.ip_address("127.0.0.1"), allowed)
    assert is_ip_allowed(ipaddress.ip_address("8.8.8.8"), allowed)


# --- parse_opengraph -----------------------------------------------------------------------

BASE = "https://example.org/articles/one.html"


def og_of(html: str | bytes, charset: str | None = "utf-8", base: str = BASE) -> dict[str, str]:
    data = html.encode("utf-8") if isinstance(html, str) else html
    return parse_opengraph(data, charset, base)


def test_first_occurrence_wins_and_keys_are_lower_case() -> None:
    html = """<html><head>
    <meta property="og:title" content="First">
    <meta property="og:title" content="Second">
    <meta property="OG:Type" content="article">
    <meta name="og:locale" content="fa_IR">
    <meta property="og:title" content="">
    <meta property="twitter:card" content="summary">
    <meta property="og:empty" content="   ">
    </head></html>"""
    assert og_of(html) == {"og:title": "First", "og:type": "article", "og:locale": "fa_IR"}


def test_og_tags_beat_fallbacks() -> None:
    html = """<head><title>Page title</title>
    <meta name="description" content="meta description">
    <meta property="og:title" content="OG title">
    <meta property="og:description" content="OG description"></head>"""
    assert og_of(html) == {"og:title": "OG title", "og:description": "OG description"}


def test_fallbacks_collapse_whitespace_and_decode_entities() -> None:
    html = "<title>\n  Tom &amp;\t Jerry  </title><meta name=description content=' a\n b '>"
    assert og_of(html) == {"og:title": "Tom & Jerry", "og:description": "a b"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/img/a.png", "https://example.org/img/a.png"),
        ("b.png", "https://example.org/articles/b.png"),
        ("//cdn.example.net/c.png", "https://cdn.example.net/c.png"),
        ("http://other.example/d.png", "http://other.example/d.png"),
        ("javascript:alert(1)", None),
        ("data:image/png;base64,iVBORw0KGgo=", None),
        ("ftp://example.org/e.png", None),
        ("http://[broken/", None),
    ],
)
def test_image_urls_are_made_absolute_and_http_only(value: str, expected: str | None) -> None:
    html = (
        f'<meta property="og:image" content="{value}">'
        f'<meta property="og:image:secure_url" content="{value}">'
        f'<meta property="og:image:url" content="{value}">'
    )
    og = og_of(html)
    for key in ("og:image", "og:image:secure_url", "og:image:url"):
        assert og.get(key) == expected


def test_titles_and_descriptions_are_truncated() -> None:
    long_text = "word " * 300
    og = og_of(
        f'<meta property="og:title" content="{long_text}">'
        f'<meta property="og:description" content="{long_text}">'
        f'<meta property="og:url" content="https://example.org/{"x" * 600}">'
    )
    assert len(og["og:title"]) == 500
    assert og["og:title"].endswith("…")
    assert og["og:title"].startswith("word word")
    assert len(og["og:description"]) <= 500
    assert len(og["og:url"]) > 600  # only titles and descriptions are cut
    fallback = og_of(f"<title>{'t' * 1000}</title><meta name=description content='{'d' * 900}'>")
    assert len(fallback["og:title"]) == 500
    assert len(fallback["og:description"]) == 500


@pytest.mark.parametrize(
    "html",
    [
        b"",
        b"not html at all",
        b"<<<>>><meta<meta property=",
        b'<meta property="og:title" content="unterminated',
        b"<html><head><title>unclosed",
        b"\xff\xfe\x00<\x00h\x00>",
        b"<!DOCTYPE><![CDATA[ x ]]><!-- <meta property='og:title' content='commented'> -->",
        b'<script>document.write(\'<meta property="og:title" content="js">\')</script>',
        b"<svg><title>icon</title></svg><p>",
    ],
)
def test_malformed_html_never_raises(html: bytes) -> None:
    og = parse_opengraph(html, None, BASE)
    assert isinstance(og, dict)
    assert og.get("og:title") not in ("commented", "js")


def test_unclosed_title_still_counts() -> None:
    assert og_of("<html><head><title>unclosed") == {"og:title": "unclosed"}


@given(
    data=st.binary(max_size=2000),
    charset=st.sampled_from([None, "utf-8", "utf-16", "windows-1251", "bogus", "base64"]),
)
@settings(max_examples=150, deadline=None)
def test_arbitrary_bytes_never_raise(data: bytes, charset: str | None) -> None:
    og = parse_opengraph(data, charset, BASE)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in og.items())


def test_charset_sources_in_order() -> None:
    page = '<meta property="og:title" content="Привет">'
    body_1251 = page.encode("windows-1251")
    # The given charset.
    assert og_of(body_1251, "windows-1251") == {"og:title": "Привет"}
    assert og_of(body_1251, "CP1251") == {"og:title": "Привет"}
    # <meta charset> in the first KiB.
    assert og_of(b'<meta charset="windows-1251">' + body_1251, None) == {"og:title": "Привет"}
    # http-equiv.
    equiv = b'<meta http-equiv="Content-Type" content="text/html; charset=windows-1251">'
    assert og_of(equiv + body_1251, None) == {"og:title": "Привет"}
    # A declaration after the first KiB is not looked for: UTF-8 with replacement characters.
    late = b" " * 2048 + b'<meta charset="windows-1251">' + body_1251
    assert og_of(late, None)["og:title"] == "\ufffd" * 6
    # Unknown or non-text charsets fall through to the next source.
    assert og_of(b'<meta charset="windows-1251">' + body_1251, "no-such-charset") == {
        "og:title": "Привет"
    }
    assert og_of(page.encode("utf-8"), "base64") == {"og:title": "Привет"}
    # The header's charset wins over the document's.
    assert og_of(b'<meta charset="iso-8859-1">' + page.encode("utf-8"), "utf-8") == {
        "og:title": "Привет"
    }
    # A byte-order mark wins over everything.
    assert og_of(page.encode("utf-16"), "iso-8859-1") == {"og:title": "Привет"}
    assert og_of(b"\xef\xbb\xbf" + page.encode("utf-8"), None) == {"og:title": "Привет"}


def test_latin1_label_decodes_like_a_browser() -> None:
    # Browsers read "iso-8859-1" as windows-1252: 0x80 is the euro sign.
    html = '<meta property="og:title" content="5 €">'.encode("cp1252")
    assert og_of(html, "iso-8859-1") == {"og:title": "5 €"}


def test_stops_at_end_of_head() -> None:
    html = """<html><head><meta property="og:title" content="in head"></head>
    <body><meta property="og:description" content="in body"><title>body title</title></body>"""
    assert og_of(html) == {"og:title": "in head"}


def test_only_the_first_mebibyte_is_parsed() -> None:
    start = time.monotonic()
    html = (
        b"<html><head><meta property='og:title' content='early'>"
        + b"filler text " * (100 * 1024)
        + b"<meta property='og:description' content='too late'>"
    )
    assert og_of(html) == {"og:title": "early"}
    assert time.monotonic() - start < 2.0
