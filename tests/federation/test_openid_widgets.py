"""The widget flow of OpenID (Client-Server and Server-Server API, "OpenID") between
Peyvand and a real Synapse: a user on each server asks their server for a token and hands
it to a third party (the test, as a widget's backend would be), which finds the server
named by ``matrix_server_name`` with Peyvand's resolver and asks its federation
``/openid/userinfo`` over TLS whom the token is for. Each server answers for its own
tokens and refuses the other's."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp

from harness.client import Account, MatrixClient
from peyvand.federation.discovery import ServerResolver
from peyvand.types import ServerName

USERINFO = "/_matrix/federation/v1/openid/userinfo"
TIMEOUT = aiohttp.ClientTimeout(total=20)


async def request_token(client: MatrixClient, account: Account) -> dict[str, Any]:
    path = f"user/{quote(account.user_id)}/openid/request_token"
    token: dict[str, Any] = (await client.request("POST", path, {}, account)).ok()
    return token


async def userinfo(server_name: str, access_token: str) -> tuple[int, Any]:
    """What a widget's backend does with a token: GET the userinfo of the server named."""
    resolver = ServerResolver(test_network=True)
    await resolver.start()
    try:
        where = await resolver.resolve(ServerName(server_name))
    finally:
        await resolver.close()
    url = f"https://{where.host}:{where.port}{USERINFO}"
    connector = aiohttp.TCPConnector(ssl=False)  # the test network's self-signed certificates
    async with (
        aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session,
        session.get(
            url, params={"access_token": access_token}, headers={"Host": where.host_header}
        ) as response,
    ):
        return response.status, await response.json()


async def test_tokens_are_checked_by_their_own_server(
    peyvand_client: MatrixClient, synapse_client: MatrixClient
) -> None:
    alice, bob = await peyvand_client.register(), await synapse_client.register()
    from_peyvand = await request_token(peyvand_client, alice)
    from_synapse = await request_token(synapse_client, bob)
    assert from_peyvand["token_type"] == from_synapse["token_type"] == "Bearer"
    peyvand_name = from_peyvand["matrix_server_name"]
    synapse_name = from_synapse["matrix_server_name"]
    assert peyvand_name == alice.user_id.split(":", 1)[1]
    assert synapse_name == bob.user_id.split(":", 1)[1]

    assert await userinfo(peyvand_name, from_peyvand["access_token"]) == (
        200,
        {"sub": alice.user_id},
    )
    assert await userinfo(synapse_name, from_synapse["access_token"]) == (200, {"sub": bob.user_id})

    # A token is only good at the server that issued it.
    status, body = await userinfo(peyvand_name, from_synapse["access_token"])
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    status, body = await userinfo(synapse_name, from_peyvand["access_token"])
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
