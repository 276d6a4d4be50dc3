"""Profiles of users of other servers (Client-Server API, "Profiles"; Server-Server API,
"Querying for information"): ``GET /profile/{userId}`` (and ``/displayname``,
``/avatar_url``) of a remote user asks their server with ``/query/profile``; its 404 stays
404, a server that cannot be reached is 502. Both directions, with a real Synapse and
with a second Peyvand.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.federation import Pair
from harness.server import HomeserverProcess
from harness.synapse import SynapseProcess

TIMEOUT_SECONDS = 60


async def _set_profile(client: MatrixClient, account: Account, name: str, avatar: str) -> None:
    user = quote(account.user_id)
    named = await client.request(
        "PUT", f"profile/{user}/displayname", json={"displayname": name}, token=account
    )
    named.ok()
    pictured = await client.request(
        "PUT", f"profile/{user}/avatar_url", json={"avatar_url": avatar}, token=account
    )
    pictured.ok()


async def _assert_remote_profile(
    client: MatrixClient, asker: Account, user_id: str, name: str, avatar: str
) -> None:
    user = quote(user_id)
    profile = (await client.request("GET", f"profile/{user}", token=asker)).ok()
    assert profile.get("displayname") == name, profile
    assert profile.get("avatar_url") == avatar, profile
    displayname = (await client.request("GET", f"profile/{user}/displayname", token=asker)).ok()
    assert displayname == {"displayname": name}
    avatar_url = (await client.request("GET", f"profile/{user}/avatar_url", token=asker)).ok()
    assert avatar_url == {"avatar_url": avatar}


async def test_profiles_of_users_of_the_other_server(pair: Pair) -> None:
    _, peyvand_client, peer, peer_client, alice, bob = pair.unpack()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        await _set_profile(peyvand_client, alice, "Alice P.", "mxc://example.org/alice")
        await _set_profile(peer_client, bob, "Bob Peer", "mxc://example.org/bob")
        await _assert_remote_profile(
            peyvand_client, alice, bob.user_id, "Bob Peer", "mxc://example.org/bob"
        )
        await _assert_remote_profile(
            peer_client, bob, alice.user_id, "Alice P.", "mxc://example.org/alice"
        )
        # The other server's 404 for a user it does not have stays 404.
        nobody = f"@nobody-{alice.user_id[1:].split(':')[0]}:{peer.server_name}"
        missing = await peyvand_client.request("GET", f"profile/{quote(nobody)}", token=alice)
        assert missing.status == 404, (missing.status, missing.body)
        assert missing.body["errcode"] == "M_NOT_FOUND"
        missing_name = await peyvand_client.request(
            "GET", f"profile/{quote(nobody)}/displayname", token=alice
        )
        assert missing_name.status == 404, (missing_name.status, missing_name.body)


async def test_remote_profile_is_cached_briefly(
    peyvand_client: MatrixClient,
    peer: SynapseProcess | HomeserverProcess,
    peer_client: MatrixClient,
) -> None:
    """A second request within the cache's lifetime is answered without asking again:
    a change on the other server shows only once the entry expires (a minute)."""
    alice = await peyvand_client.register()
    bob = await peer_client.register()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        await _set_profile(peer_client, bob, "First", "mxc://example.org/first")
        user = quote(bob.user_id)
        first = (await peyvand_client.request("GET", f"profile/{user}", token=alice)).ok()
        assert first["displayname"] == "First"
        await _set_profile(peer_client, bob, "Second", "mxc://example.org/second")
        at_peer = (await peer_client.request("GET", f"profile/{user}", token=bob)).ok()
        assert at_peer["displayname"] == "Second"
        again = (await peyvand_client.request("GET", f"profile/{user}", token=alice)).ok()
        assert again["displayname"] == "First"


async def test_profile_on_an_unreachable_server_is_502(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient
) -> None:
    alice = await peyvand_client.register()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        response = await peyvand_client.request(
            "GET", f"profile/{quote('@someone:127.0.0.1:9')}", token=alice
        )
    assert response.status == 502, (response.status, response.body)
    assert response.body["errcode"] == "M_UNKNOWN"
