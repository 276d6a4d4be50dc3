"""The federation client against a real HTTPS server on 127.0.0.1 with a self-signed
certificate (``generate_self_signed``): signed JSON requests, the exact request target,
errors, bounds, the address guard and certificate verification.

Discovery is faked (no DNS, no well-known); nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from cryptography import x509
from signedjson.key import get_verify_key

from harness.ports import free_port
from peyvand.events.signing import generate_signing_key
from peyvand.federation.client import (
    FederationClient,
    FederationHttpError,
    FederationRefused,
    FederationUnreachable,
    request_uri,
)
from peyvand.federation.discovery import (
    ServerResolver,
    SrvAnswer,
    SrvRecord,
    WellKnownResponse,
)
from peyvand.federation.policy import ServerPolicy
from peyvand.federation.request_auth import parse_authorization, verify_request
from peyvand.federation.tls import (
    client_ssl_context,
    generate_self_signed,
    server_ssl_context,
)
from peyvand.types import ServerName

ORIGIN = ServerName("origin.test")
SIGNING_KEY = generate_signing_key("a_test")
VERIFY_KEY = get_verify_key(SIGNING_KEY)


@dataclass
class Seen:
    method: str
    raw_path: str
    host: str | None
    authorization: str | None
    content_type: str | None
    body: bytes


@dataclass
class Peer:
    """The HTTPS server standing in for another homeserver."""

    port: int
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> ServerName:
        return ServerName(f"127.0.0.1:{self.port}")

    def check_signature(self, seen: Seen, destination: ServerName | None = None) -> None:
        """The X-Matrix header signs exactly what the server received."""
        assert seen.authorization is not None
        auth = parse_authorization(seen.authorization)
        assert auth.origin == ORIGIN
        assert auth.destination == (destination or self.name)
        content = orjson.loads(seen.body) if seen.body else None
        assert verify_request(
            auth,
            VERIFY_KEY,
            method=seen.method,
            uri=seen.raw_path,
            destination=destination or self.name,
            content=content,
        )


class FakeDns:
    def __init__(self, answers: dict[str, SrvAnswer] | None = None) -> None:
        self.answers = answers or {}

    async def lookup_srv(self, name: str) -> SrvAnswer:
        return self.answers.get(name, SrvAnswer((), 60.0))


class NoWellKnown:
    async def fetch(self, hostname: str) -> WellKnownResponse:
        return WellKnownResponse(404, b"", {})


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "tls.crt", directory / "tls.key"
    generate_self_signed(cert, key, ["localhost", "127.0.0.1", "::1"])
    yield cert, key


def _peer_app(peer: Peer) -> web.Application:
    async def record(request: web.Request) -> Seen:
        seen = Seen(
            request.method,
            request.raw_path,
            request.headers.get("Host"),
            request.headers.get("Authorization"),
            request.headers.get("Content-Type"),
            await request.read(),
        )
        peer.seen.append(seen)
        return seen

    async def echo(request: web.Request) -> web.Response:
        seen = await record(request)
        query = {key: request.query.getall(key) for key in request.query}
        body = orjson.loads(seen.body) if seen.body else None
        return web.json_response({"method": request.method, "query": query, "body": body})

    async def json_error(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"errcode": "M_FORBIDDEN", "error": "not you"}, status=403)

    async def text_error(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=502, text="<html>bad gateway</html>")

    async def slow(request: web.Request) -> web.Response:
        await record(request)
        with suppress(TimeoutError):
            await asyncio.wait_for(peer.release.wait(), 5)
        return web.json_response({})

    async def big(request: web.Request) -> web.Response:
        return web.json_response({"data": "x" * 4096})

    async def big_chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"data": "')
        for _ in range(8):
            await response.write(b"x" * 1024)
        await response.write(b'"}')
        await response.write_eof()
        return response

    async def not_json(request: web.Request) -> web.Response:
        return web.Response(text="this is not json", content_type="application/json")

    async def media(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body=b"\x89PNG media bytes", content_type="image/png")

    async def redirect(request: web.Request) -> web.Response:
        await record(request)
        kind = request.match_info["kind"]
        location = {
            "relative": "/_matrix/media/file?x=%2F1",
            "absolute": f"https://localhost:{peer.port}/_matrix/media/file",
        }[kind]
        return web.Response(status=307, headers={"Location": location})  # sent as written

    app = web.Application()
    app.router.add_route("*", "/_matrix/federation/v1/echo/{tail:.*}", echo)
    app.router.add_get("/_matrix/federation/v1/error/json", json_error)
    app.router.add_get("/_matrix/federation/v1/error/text", text_error)
    app.router.add_get("/_matrix/federation/v1/slow", slow)
    app.router.add_get("/_matrix/federation/v1/big", big)
    app.router.add_get("/_matrix/federation/v1/big-chunked", big_chunked)
    app.router.add_get("/_matrix/federation/v1/not-json", not_json)
    app.router.add_get("/_matrix/media/file", media)
    app.router.add_get("/_matrix/media/redirect/{kind}", redirect)
    return app


@pytest.fixture
async def peer(tls_files: tuple[Path, Path]) -> AsyncIterator[Peer]:
    peer = Peer(free_port())
    runner = web.AppRunner(_peer_app(peer), shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", peer.port, ssl_context=server_ssl_context(*tls_files))
    await site.start()
    try:
        yield peer
    finally:
        peer.release.set()
        await runner.cleanup()


@asynccontextmanager
async def federation_client(
    *,
    test_network: bool = True,
    policy: ServerPolicy | None = None,
    dns: FakeDns | None = None,
    **kwargs: Any,
) -> AsyncIterator[FederationClient]:
    resolver = ServerResolver(dns=dns or FakeDns(), well_known=NoWellKnown())
    client = FederationClient(
        ORIGIN,
        SIGNING_KEY,
        resolver=resolver,
        policy=policy or ServerPolicy(),
        test_network=test_network,
        **kwargs,
    )
    await client.start()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def client() -> AsyncIterator[FederationClient]:
    async with federation_client() as client:
        yield client


# --- requests ---------------------------------------------------------------------------------


async def test_get_json_is_signed_over_the_exact_target(
    peer: Peer, client: FederationClient
) -> None:
    path = "/_matrix/federation/v1/echo/%21room%3Aexample.org/%24event%2Fid"
    query = {"q": "a b/c?d&e=f#g", "ü": ["x", "y z"], "plus": "1+1=2%", "empty": ""}
    answer = await client.get_json(peer.name, path, query=query)

    assert answer["method"] == "GET"
    assert answer["query"] == {
        "q": ["a b/c?d&e=f#g"],
        "ü": ["x", "y z"],
        "plus": ["1+1=2%"],
        "empty": [""],
    }
    (seen,) = peer.seen
    assert seen.raw_path == request_uri(path, query)
    assert seen.raw_path.startswith(path + "?q=a%20b%2Fc%3Fd%26e%3Df%23g&%C3%BC=x&%C3%BC=y%20z&")
    assert seen.host == peer.name  # an IP-literal server name: Host is the server name
    peer.check_signature(seen)


async def test_put_and_post_json(peer: Peer, client: FederationClient) -> None:
    body = {"pdus": [{"content": {"body": "héllo ☃"}}], "edus": [], "n": 1}
    put = await client.put_json(peer.name, "/_matrix/federation/v1/echo/send/1", body)
    post = await client.post_json(
        peer.name, "/_matrix/federation/v1/echo/query", {"a": [1, 2]}, query={"v": "1"}
    )
    assert put == {"method": "PUT", "query": {}, "body": body}
    assert post == {"method": "POST", "query": {"v": ["1"]}, "body": {"a": [1, 2]}}
    for seen in peer.seen:
        assert seen.content_type == "application/json"
        peer.check_signature(seen)
    assert [s.raw_path for s in peer.seen] == [
        "/_matrix/federation/v1/echo/send/1",
        "/_matrix/federation/v1/echo/query?v=1",
    ]


async def test_unsigned_request(peer: Peer, client: FederationClient) -> None:
    await client.get_json(peer.name, "/_matrix/federation/v1/echo/version", signed=False)
    assert peer.seen[0].authorization is None


async def test_srv_targets_are_tried_in_order(peer: Peer) -> None:
    """Host header and signature use the server name; a dead first target is skipped."""
    dns = FakeDns(
        {
            "_matrix-fed._tcp.srv.test": SrvAnswer(
                (
                    SrvRecord(0, 0, free_port(), "127.0.0.1"),
                    SrvRecord(5, 0, peer.port, "127.0.0.1"),
                ),
                300.0,
            )
        }
    )
    async with federation_client(dns=dns) as client:
        await client.get_json(ServerName("srv.test"), "/_matrix/federation/v1/echo/x")
    (seen,) = peer.seen
    assert seen.host == "srv.test"
    peer.check_signature(seen, destination=ServerName("srv.test"))


@pytest.mark.parametrize("path", ["relative", "/a b", "/a?b", "/a#b", "/%zz", "/a/../b", "/é"])
async def test_bad_paths_are_programming_errors(client: FederationClient, path: str) -> None:
    with pytest.raises(ValueError):
        await client.get_json(ServerName("example.org"), path)


# --- errors -----------------------------------------------------------------------------------


async def test_matrix_errors_become_federation_http_errors(
    peer: Peer, client: FederationClient
) -> None:
    with pytest.raises(FederationHttpError) as caught:
        await client.get_json(peer.name, "/_matrix/federation/v1/error/json")
    error = caught.value
    assert (error.status, error.errcode, error.message) == (403, "M_FORBIDDEN", "not you")
    assert error.body == {"errcode": "M_FORBIDDEN", "error": "not you"}

    with pytest.raises(FederationHttpError) as caught:
        await client.get_json(peer.name, "/_matrix/federation/v1/error/text")
    assert (caught.value.status, caught.value.errcode) == (502, None)
    assert caught.value.body == b"<html>bad gateway</html>"

    with pytest.raises(FederationHttpError) as caught:
        await client.get_json(peer.name, "/_matrix/federation/v1/no-such-endpoint")
    assert caught.value.status == 404


async def test_timeout(peer: Peer, client: FederationClient) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(FederationUnreachable, match="timed out"):
        await client.get_json(peer.name, "/_matrix/federation/v1/slow", timeout=0.3)
    assert loop.time() - started < 2


@pytest.mark.parametrize("path", ["big", "big-chunked"])
async def test_oversized_responses(peer: Peer, path: str) -> None:
    async with federation_client(max_response_size=1024) as client:
        with pytest.raises(FederationUnreachable, match="too large"):
            await client.get_json(peer.name, f"/_matrix/federation/v1/{path}")


async def test_invalid_json(peer: Peer, client: FederationClient) -> None:
    with pytest.raises(FederationUnreachable, match="invalid JSON"):
        await client.get_json(peer.name, "/_matrix/federation/v1/not-json")


async def test_nothing_listening(client: FederationClient) -> None:
    with pytest.raises(FederationUnreachable):
        await client.get_json(
            ServerName(f"127.0.0.1:{free_port()}"), "/_matrix/federation/v1/version"
        )


async def test_refused_destinations(peer: Peer) -> None:
    policy = ServerPolicy((), ("127.0.0.1", "*.evil.test"))
    async with federation_client(policy=policy) as client:
        refused = ("a.evil.test", ORIGIN, ORIGIN.upper(), "bad name", "")
        for destination in (peer.name, *map(ServerName, refused)):
            with pytest.raises(FederationRefused):
                await client.get_json(destination, "/_matrix/federation/v1/echo/x")
            with pytest.raises(FederationRefused):
                await client.put_json(destination, "/_matrix/federation/v1/echo/x", {})
    assert peer.seen == []


# --- the address guard and certificates ---------------------------------------------------------


async def test_outside_test_networks_loopback_is_refused(peer: Peer) -> None:
    async with federation_client(test_network=False) as client:
        with pytest.raises(FederationUnreachable, match="not an allowed address"):
            await client.get_json(peer.name, "/_matrix/federation/v1/echo/x")
        with pytest.raises(FederationUnreachable, match="disallowed addresses"):
            await client.get_json(
                ServerName(f"localhost:{peer.port}"), "/_matrix/federation/v1/echo/x"
            )
        with pytest.raises(FederationUnreachable, match="not an allowed address"):
            async with client.open_get(ServerName(f"[::1]:{peer.port}"), "/_matrix/media/file"):
                pass
    assert peer.seen == []


async def test_self_signed_certificate_fails_verification(peer: Peer, tls_files: Any) -> None:
    """What a server outside a test network does: verify against the system's CAs."""
    url = f"https://127.0.0.1:{peer.port}/_matrix/media/file"
    connector = aiohttp.TCPConnector(ssl=client_ssl_context(test_network=False))
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(url)

    # The certificate itself is right: trusted explicitly, it is valid for its names.
    trusting = client_ssl_context(test_network=False)
    trusting.load_verify_locations(tls_files[0])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting)) as session:
        async with session.get(url) as response:  # IP address SAN
            assert response.status == 200
        async with session.get(url, server_hostname="localhost") as response:
            assert response.status == 200
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(url, server_hostname="other.test")


def test_generated_certificate(tls_files: tuple[Path, Path]) -> None:
    cert_path, key_path = tls_files
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime.days >= 3650
    assert key_path.stat().st_mode & 0o077 == 0
    context = server_ssl_context(cert_path, key_path)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_client_contexts() -> None:
    verifying = client_ssl_context(test_network=False)
    assert verifying.verify_mode == ssl.CERT_REQUIRED and verifying.check_hostname
    assert verifying.minimum_version == ssl.TLSVersion.TLSv1_2
    lax = client_ssl_context(test_network=True)
    assert lax.verify_mode == ssl.CERT_NONE and not lax.check_hostname


# --- open_get (remote media) ------------------------------------------------------------------


async def test_open_get_hands_over_the_signed_response(
    peer: Peer, client: FederationClient
) -> None:
    async with client.open_get(peer.name, "/_matrix/media/file") as response:
        assert response.content_type == "image/png"
        assert response.headers["Content-Type"] == "image/png"
        assert await response.read() == b"\x89PNG media bytes"
    (seen,) = peer.seen
    peer.check_signature(seen)


async def test_media_downloads_do_not_follow_redirects(
    peer: Peer, client: FederationClient
) -> None:
    """Not even to another host, which would never be given our signature anyway."""
    for kind in ("relative", "absolute"):
        with pytest.raises(FederationHttpError) as caught:
            async with client.open_get(peer.name, f"/_matrix/media/redirect/{kind}"):
                pass
        assert caught.value.status == 307
    assert [seen.raw_path for seen in peer.seen] == [
        "/_matrix/media/redirect/relative",
        "/_matrix/media/redirect/absolute",
    ]


async def test_json_requests_do_not_follow_redirects(peer: Peer, client: FederationClient) -> None:
    with pytest.raises(FederationHttpError) as caught:
        await client.get_json(peer.name, "/_matrix/media/redirect/relative")
    assert caught.value.status == 307
    assert len(peer.seen) == 1


async def test_client_must_be_started() -> None:
    client = FederationClient(
        ORIGIN,
        SIGNING_KEY,
        resolver=ServerResolver(dns=FakeDns(), well_known=NoWellKnown()),
        policy=ServerPolicy(),
        test_network=True,
    )
    with pytest.raises(RuntimeError):
        await client.get_json(ServerName("example.org"), "/_matrix/federation/v1/version")
