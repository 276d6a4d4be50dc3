"""OpenID tokens over HTTP on every backend: POST /user/{userId}/openid/request_token
(Client-Server API "OpenID") and what GET /_matrix/federation/v1/openid/userinfo
(Server-Server API "OpenID") says of them; only for oneself, unknown tokens refused, and
a deactivated (or erased) account's tokens deleted."""

from __future__ import annotations

from urllib.parse import quote

from harness.admin import login_admin
from harness.client import Account, MatrixClient, Response
from harness.database import query
from harness.server import HomeserverProcess

USERINFO = "/_matrix/federation/v1/openid/userinfo"


async def request_token(client: MatrixClient, account: Account, user_id: str) -> Response:
    path = f"user/{quote(user_id)}/openid/request_token"
    return await client.request("POST", path, {}, account)


async def test_token_names_its_user(client: MatrixClient) -> None:
    alice = await client.register()
    token = (await request_token(client, alice, alice.user_id)).ok()
    assert token["token_type"] == "Bearer"
    assert token["matrix_server_name"] == alice.user_id.split(":", 1)[1]
    assert token["expires_in"] == 3600
    assert token["access_token"] != alice.access_token
    info = await client.request("GET", USERINFO, params={"access_token": token["access_token"]})
    assert info.ok() == {"sub": alice.user_id}
    # The OpenID token is no access token, and an access token is no OpenID token.
    whoami = await client.request("GET", "account/whoami", token=token["access_token"])
    assert whoami.status == 401
    wrong = await client.request("GET", USERINFO, params={"access_token": alice.access_token})
    assert wrong.status == 401 and wrong.body["errcode"] == "M_UNKNOWN_TOKEN"


async def test_only_for_oneself(client: MatrixClient) -> None:
    alice, bob = await client.register(), await client.register()
    refused = await request_token(client, alice, bob.user_id)
    assert refused.status == 403 and refused.body["errcode"] == "M_FORBIDDEN"
    anonymous = await client.request("POST", f"user/{quote(alice.user_id)}/openid/request_token")
    assert anonymous.status == 401 and anonymous.body["errcode"] == "M_MISSING_TOKEN"
    path = f"user/{quote(alice.user_id)}/openid/request_token"
    not_object = await client.request("POST", path, [1], alice)
    assert not_object.status == 400 and not_object.body["errcode"] == "M_NOT_JSON"


async def test_unknown_and_missing_tokens(client: MatrixClient) -> None:
    unknown = await client.request("GET", USERINFO, params={"access_token": "nonsense"})
    assert unknown.status == 401 and unknown.body["errcode"] == "M_UNKNOWN_TOKEN"
    missing = await client.request("GET", USERINFO)
    assert missing.status == 401 and missing.body["errcode"] == "M_MISSING_TOKEN"


async def userinfo(client: MatrixClient, token: str) -> Response:
    return await client.request("GET", USERINFO, params={"access_token": token})


async def deactivate_self(client: MatrixClient, account: Account) -> None:
    """POST /account/deactivate through UIA with the account's password."""
    first = await client.request("POST", "account/deactivate", json={}, token=account)
    assert first.status == 401 and "session" in first.body, first.body
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": account.user_id},
        "password": account.password,
        "session": first.body["session"],
    }
    done = await client.request("POST", "account/deactivate", json={"auth": auth}, token=account)
    done.ok()


async def test_deactivation_deletes_the_accounts_tokens(
    client: MatrixClient, homeserver: HomeserverProcess
) -> None:
    """Deactivated by themselves, or erased by an admin: the user's OpenID tokens no
    longer name them (401 ``M_UNKNOWN_TOKEN``) and are gone from the database; another
    user's token still works."""
    admin = await login_admin(client, homeserver)
    alice, bob, carol = await client.register(), await client.register(), await client.register()
    tokens = {
        account.user_id: [
            (await request_token(client, account, account.user_id)).ok()["access_token"]
            for _ in range(2)
        ]
        for account in (alice, bob, carol)
    }
    for user_id, issued in tokens.items():
        for token in issued:
            assert (await userinfo(client, token)).ok() == {"sub": user_id}

    await deactivate_self(client, alice)
    path = f"/_synapse/admin/v1/deactivate/{quote(bob.user_id)}"
    (await client.request("POST", path, json={"erase": True}, token=admin)).ok()

    for account in (alice, bob):
        for token in tokens[account.user_id]:
            gone = await userinfo(client, token)
            assert (gone.status, gone.body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
        rows = await query(
            homeserver, "SELECT token_hash FROM openid_tokens WHERE user_id = $1", account.user_id
        )
        assert rows == []
    for token in tokens[carol.user_id]:
        assert (await userinfo(client, token)).ok() == {"sub": carol.user_id}
