"""GET /_matrix/client/v3/admin/whois/{userId} (Client-Server API, "Server
Administration") over HTTP on every backend."""

from __future__ import annotations

from urllib.parse import quote

from harness.admin import login_admin
from harness.client import MatrixClient
from harness.server import HomeserverProcess


async def test_whois_for_oneself_and_for_admins(
    homeserver: HomeserverProcess, client: MatrixClient
) -> None:
    alice, bob = await client.register(), await client.register()
    path = f"admin/whois/{quote(alice.user_id, safe='')}"
    own = (await client.request("GET", path, token=alice)).ok()
    assert own["user_id"] == alice.user_id
    device = own["devices"][alice.device_id]
    [connection] = device["sessions"][0]["connections"]
    assert connection["ip"] == "127.0.0.1"
    assert isinstance(connection["last_seen"], int) and "user_agent" in connection
    # Another user may not look; a server admin may.
    other = await client.request("GET", path, token=bob)
    assert other.status == 403 and other.body["errcode"] == "M_FORBIDDEN"
    admin = await login_admin(client, homeserver)
    assert (await client.request("GET", path, token=admin)).ok() == own
    unknown = f"admin/whois/{quote('@nobody:elsewhere.example', safe='')}"
    assert (await client.request("GET", unknown, token=admin)).status == 404
