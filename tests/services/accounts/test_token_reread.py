"""Cached access tokens in a deployment of several processes (issue 21): a token read
from the database is read again after ``read_tokens_again_after`` seconds, so a
revocation whose bus message this process never got holds here within that time; one
process keeps its tokens until it revokes them itself."""

from __future__ import annotations

import pytest

from peyvand.errors import MatrixError
from peyvand.services.accounts.auth import AuthService
from peyvand.storage.accounts import TokenOwner
from peyvand.types import DeviceID, UserID

ALICE = UserID("@alice:example.org")


class FakeAccounts:
    """The one query ``get_requester`` makes; another process deletes the token."""

    def __init__(self) -> None:
        self.tokens = {"tok": TokenOwner(1, ALICE, DeviceID("DEV"), False, False)}
        self.reads = 0

    async def get_token_owner(self, token: str) -> TokenOwner | None:
        self.reads += 1
        return self.tokens.get(token)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _auth(accounts: FakeAccounts, clock: Clock) -> AuthService:
    return AuthService(None, accounts, monotonic=clock)  # type: ignore[arg-type]


async def test_a_token_revoked_elsewhere_unannounced_is_refused_after_the_delay() -> None:
    accounts, clock = FakeAccounts(), Clock()
    auth = _auth(accounts, clock)
    auth.read_tokens_again_after(5.0)
    assert (await auth.get_requester("tok")).user_id == ALICE
    del accounts.tokens["tok"]  # revoked by another process; its message lost
    clock.now += 4.9
    assert (await auth.get_requester("tok")).user_id == ALICE  # still trusted
    assert accounts.reads == 1
    clock.now += 0.2
    with pytest.raises(MatrixError) as refused:
        await auth.get_requester("tok")
    assert refused.value.errcode == "M_UNKNOWN_TOKEN"
    assert accounts.reads == 2


async def test_a_live_token_is_read_again_once_per_delay() -> None:
    accounts, clock = FakeAccounts(), Clock()
    auth = _auth(accounts, clock)
    auth.read_tokens_again_after(5.0)
    for _ in range(3):
        for _ in range(10):
            assert (await auth.get_requester("tok")).user_id == ALICE
        clock.now += 5.0
    assert accounts.reads == 3


async def test_one_process_keeps_its_tokens() -> None:
    accounts, clock = FakeAccounts(), Clock()
    auth = _auth(accounts, clock)
    assert (await auth.get_requester("tok")).user_id == ALICE
    clock.now += 3600.0
    assert (await auth.get_requester("tok")).user_id == ALICE
    assert accounts.reads == 1
