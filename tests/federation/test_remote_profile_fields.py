"""Custom profile fields of users of other servers (Client-Server API "Profiles" v1.16;
Server-Server API ``/query/profile?field=``), both directions, with a real Synapse (1.163
serves custom fields on the stable paths) and with a second Peyvand."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.federation import Pair

TIMEOUT_SECONDS = 60
FIELD = "org.example.job_title"


async def _set_field(client: MatrixClient, account: Account, value: object) -> None:
    path = f"profile/{quote(account.user_id)}/{FIELD}"
    (await client.request("PUT", path, json={FIELD: value}, token=account)).ok()


async def _assert_remote_field(
    client: MatrixClient, asker: Account, user_id: str, value: object
) -> None:
    user = quote(user_id)
    field = (await client.request("GET", f"profile/{user}/{FIELD}", token=asker)).ok()
    assert field == {FIELD: value}
    unset = await client.request("GET", f"profile/{user}/org.example.unset", token=asker)
    assert unset.status == 404, (unset.status, unset.body)
    assert unset.body["errcode"] == "M_NOT_FOUND"


async def test_custom_fields_of_users_of_the_other_server(pair: Pair) -> None:
    _, peyvand_client, _, peer_client, alice, bob = pair.unpack()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        await _set_field(peyvand_client, alice, {"title": "Engineer", "level": 3})
        await _set_field(peer_client, bob, "Gardener")
        # Each server asks the other for the one field (query/profile?field=...).
        await _assert_remote_field(
            peer_client, bob, alice.user_id, {"title": "Engineer", "level": 3}
        )
        await _assert_remote_field(peyvand_client, alice, bob.user_id, "Gardener")
        # The whole profile carries custom fields too.
        whole = (
            await peer_client.request("GET", f"profile/{quote(alice.user_id)}", token=bob)
        ).ok()
        assert whole[FIELD] == {"title": "Engineer", "level": 3}
        mine = (
            await peyvand_client.request("GET", f"profile/{quote(bob.user_id)}", token=alice)
        ).ok()
        assert mine[FIELD] == "Gardener"
