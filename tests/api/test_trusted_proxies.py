"""The client's address behind trusted reverse proxies (``http.trusted_proxies``,
``api.client_address``): the right-most ``X-Forwarded-For`` address that is not a
trusted proxy when the connection's peer is one, the peer itself otherwise. The per-IP
login rate limit and an appservice's ``ip_range_whitelist`` follow it; a header sent by
an untrusted peer changes nothing."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from harness.appservice import write_registration
from harness.server import SERVER_NAME, HomeserverProcess, running_homeserver
from peyvand.api.client_address import client_address, trusted_networks

TRUSTED = trusted_networks(["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"])
LOGIN_BURST = 2
AS_TOKEN = "as-token-proxied"


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        # No trusted proxy in front: the peer, whatever the header says.
        ("198.51.100.9", ["203.0.113.1"], "198.51.100.9"),
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.1"], "203.0.113.1"),
        # A client's own header is to the left of what the proxies appended.
        ("127.0.0.1", ["10.1.1.1, 203.0.113.1"], "203.0.113.1"),
        ("127.0.0.1", ["203.0.113.1, 10.2.2.2"], "203.0.113.1"),
        ("127.0.0.1", ["192.0.2.7", "203.0.113.1, 10.2.2.2"], "203.0.113.1"),
        # Every hop trusted: the left-most; a malformed hop: the last trusted one.
        ("127.0.0.1", ["10.1.1.1, 10.2.2.2"], "10.1.1.1"),
        ("127.0.0.1", ["203.0.113.1, nonsense, 10.2.2.2"], "10.2.2.2"),
        ("127.0.0.1", ["nonsense"], "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.1:4000"], "127.0.0.1"),
        ("fd00::1", ["2001:db8::5"], "2001:db8::5"),
        ("127.0.0.1", ["[2001:db8::5]"], "2001:db8::5"),
        ("::ffff:127.0.0.1", ["203.0.113.1"], "203.0.113.1"),
        (None, ["203.0.113.1"], None),
    ],
)
def test_client_address(peer: str | None, forwarded: list[str], client: str | None) -> None:
    assert client_address(peer, forwarded, TRUSTED) == client


def test_no_trusted_proxy_means_the_peer() -> None:
    assert client_address("127.0.0.1", ["203.0.113.1"], ()) == "127.0.0.1"
    assert trusted_networks(["10.0.0.1/8"]) == (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.fixture(params=["loopback trusted", "loopback untrusted"])
def proxied_homeserver(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[HomeserverProcess, bool]]:
    """A server with login rate limits and an appservice accepted from 10.0.0.0/8 only;
    the tests' loopback connections are a trusted proxy's, or not."""
    trusted = request.param == "loopback trusted"
    registration = write_registration(
        tmp_path / "proxied.yaml",
        appservice_id="proxied",
        url=None,
        as_token=AS_TOKEN,
        hs_token="hs-token-proxied",
        sender_localpart="proxiedbot",
        user_regex=f"@proxied_.*:{SERVER_NAME}",
        ip_range_whitelist=["10.0.0.0/8"],
    )
    options = {
        "http.trusted_proxies": '["127.0.0.1/32"]' if trusted else '["192.0.2.0/24"]',
        "app_service_config_files": f'["{registration}"]',
        "rate_limits.enabled": "true",
        "rate_limits.login_burst": str(LOGIN_BURST),
        "rate_limits.login_per_second": "0.01",
    }
    with running_homeserver(backend, request, tmp_path / "server", options=options) as server:
        yield server, trusted


async def _login(session: aiohttp.ClientSession, base_url: str, forwarded_for: str) -> int:
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "nobody"},
        "password": "wrong",
    }
    headers = {"X-Forwarded-For": forwarded_for}
    async with session.post(f"{base_url}/_matrix/client/v3/login", json=body, headers=headers) as r:
        return r.status


async def _whoami(session: aiohttp.ClientSession, base_url: str, forwarded_for: str) -> int:
    headers = {"X-Forwarded-For": forwarded_for, "Authorization": f"Bearer {AS_TOKEN}"}
    url = f"{base_url}/_matrix/client/v3/account/whoami"
    async with session.get(url, headers=headers) as response:
        return response.status


async def test_the_login_limit_counts_per_forwarded_client(
    proxied_homeserver: tuple[HomeserverProcess, bool],
) -> None:
    """Through a trusted proxy each forwarded client has its own login bucket; a header
    from an untrusted peer is ignored, so every 'client' shares the peer's."""
    server, trusted = proxied_homeserver
    async with aiohttp.ClientSession() as session:
        first = [await _login(session, server.base_url, "203.0.113.1") for _ in range(3)]
        assert first == [403] * LOGIN_BURST + [429]
        other = await _login(session, server.base_url, "203.0.113.2")
        assert other == (403 if trusted else 429)
        # A client's own header in front of the proxy's entry does not pick a bucket.
        spoofed = await _login(session, server.base_url, "203.0.113.2, 203.0.113.1")
        assert spoofed == 429


async def test_an_appservice_whitelist_checks_the_forwarded_client(
    proxied_homeserver: tuple[HomeserverProcess, bool],
) -> None:
    server, trusted = proxied_homeserver
    async with aiohttp.ClientSession() as session:
        assert await _whoami(session, server.base_url, "10.1.2.3") == (200 if trusted else 401)
        # A client claiming a whitelisted address to a trusted proxy that appended its own.
        assert await _whoami(session, server.base_url, "10.1.2.3, 198.51.100.7") == 401
