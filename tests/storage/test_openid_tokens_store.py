"""OpenID tokens (``services.accounts.openid`` over ``storage.openid_tokens``, schema 041)
on both backends with a fake clock: a token is valid up to its last moment and not after,
only its hash is stored, expired tokens are deleted as new ones are issued, and a
deactivated account's tokens name no one and are deleted with ``delete_all``."""

from __future__ import annotations

from peyvand.services.accounts.openid import TOKEN_LIFETIME_MS, OpenIdService
from peyvand.storage.accounts import AccountStore
from peyvand.storage.database import Database
from peyvand.storage.openid_tokens import OpenIdTokenStore
from peyvand.types import ServerName, UserID

ALICE = UserID("@alice:test")
BOB = UserID("@bob:test")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def make_users(database: Database) -> AccountStore:
    accounts = AccountStore(database)
    for user_id in (ALICE, BOB):
        await accounts.create_user(user_id, None, is_admin=False, created_ts=0)
    return accounts


async def test_tokens_expire_and_are_pruned(database: Database) -> None:
    await make_users(database)
    clock = Clock()
    store = OpenIdTokenStore(database)
    openid = OpenIdService(ServerName("test"), store, clock)
    first = await openid.request_token(ALICE)
    assert first.expires_in * 1000 == TOKEN_LIFETIME_MS
    stored = await database.fetchval("SELECT token_hash FROM openid_tokens")
    assert stored != first.access_token and len(stored) == 64

    clock.now += TOKEN_LIFETIME_MS / 1000
    assert await openid.userinfo(first.access_token) == ALICE  # its last valid moment
    second = await openid.request_token(BOB)
    assert await store.count() == 2  # the first is not expired yet: kept

    clock.now += 0.01
    assert await openid.userinfo(first.access_token) is None
    assert await openid.userinfo(second.access_token) == BOB
    await openid.request_token(BOB)
    assert await store.count() == 2  # the first was deleted with this issue
    assert await openid.userinfo("not a token") is None


async def test_a_deactivated_accounts_tokens_name_no_one_and_are_deleted(
    database: Database,
) -> None:
    accounts = await make_users(database)
    store = OpenIdTokenStore(database)
    openid = OpenIdService(ServerName("test"), store, Clock())
    alice_tokens = [await openid.request_token(ALICE) for _ in range(2)]
    bob_token = await openid.request_token(BOB)
    # Deactivated, the account's tokens name no one even before they are deleted.
    await accounts.deactivate_user(ALICE)
    for token in alice_tokens:
        assert await openid.userinfo(token.access_token) is None
    await store.delete_all(ALICE)
    assert await store.count() == 1
    assert await openid.userinfo(bob_token.access_token) == BOB
