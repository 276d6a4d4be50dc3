"""Discovery over HTTP on every backend: ``/.well-known/matrix/{client,server,support}``
(Client-Server API "Server Discovery" and "Server support discovery", Server-Server API
"Resolving server names") and the landing page at ``/``; the delegation read back by
Peyvand's own server-name resolver from the federation (TLS) listener."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from harness.client import MatrixClient, new_session
from harness.server import HomeserverProcess, start_homeserver
from peyvand.federation.discovery import HttpWellKnownFetcher, ResolvedServer, ServerResolver
from peyvand.types import ServerName

_CONTACTS = (
    '[{role = "m.role.admin", matrix_id = "@admin:example.org",'
    ' email_address = "admin@example.org"}, {role = "m.role.security",'
    ' email_address = "security@example.org"}]'
)


@pytest.fixture
def delegating_homeserver(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> HomeserverProcess:
    server = start_homeserver(
        backend,
        request,
        tmp_path / "homeserver",
        federation=True,
        options={
            "well_known.server": '"matrix.example.org:8448"',
            "well_known.support_page": '"https://example.org/support.html"',
            "well_known.support_contacts": _CONTACTS,
        },
    )
    request.addfinalizer(server.stop)
    return server


async def test_unconfigured_discovery_is_not_found(client: MatrixClient) -> None:
    for path in ("/.well-known/matrix/server", "/.well-known/matrix/support"):
        response = await client.request("GET", path)
        assert response.status == 404, response.body
        assert response.body["errcode"] == "M_NOT_FOUND"
    client_file = (await client.request("GET", "/.well-known/matrix/client")).ok()
    assert client_file["m.homeserver"]["base_url"].startswith("http://127.0.0.1:")


async def test_configured_discovery(delegating_homeserver: HomeserverProcess) -> None:
    async with new_session() as session:
        client = MatrixClient(session, delegating_homeserver.base_url)
        server = (await client.request("GET", "/.well-known/matrix/server")).ok()
        support = (await client.request("GET", "/.well-known/matrix/support")).ok()
    assert server == {"m.server": "matrix.example.org:8448"}
    assert support == {
        "contacts": [
            {
                "matrix_id": "@admin:example.org",
                "email_address": "admin@example.org",
                "role": "m.role.admin",
            },
            {"email_address": "security@example.org", "role": "m.role.security"},
        ],
        "support_page": "https://example.org/support.html",
    }


async def test_delegation_through_the_federation_listener(
    delegating_homeserver: HomeserverProcess,
) -> None:
    """What another server does for ``example.org``: fetch the well-known over HTTPS (here
    from the federation port, where it is served too) and follow ``m.server``."""
    port = delegating_homeserver.federation_port
    assert port is not None
    fetcher = HttpWellKnownFetcher(test_network=True, port=port, timeout=10.0)
    resolver = ServerResolver(test_network=True, well_known=fetcher)
    await fetcher.start()
    try:
        resolved = await resolver.resolve(ServerName("localhost"))
    finally:
        await fetcher.close()
    assert resolved == ResolvedServer(
        "matrix.example.org", 8448, ServerName("matrix.example.org:8448"), "matrix.example.org"
    )


async def test_landing_page(homeserver: HomeserverProcess) -> None:
    timeout = aiohttp.ClientTimeout(total=30)
    async with new_session() as session:
        async with session.get(homeserver.base_url + "/", timeout=timeout) as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert "Peyvand is running" in await response.text()
        async with session.head(homeserver.base_url + "/", timeout=timeout) as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert await response.read() == b""
