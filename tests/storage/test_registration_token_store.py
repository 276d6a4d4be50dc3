"""RegistrationTokenStore contract: the same behaviour on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from peyvand.storage.accounts import AccountStore
from peyvand.storage.database import Database
from peyvand.storage.registration_tokens import RegistrationTokenRow, RegistrationTokenStore
from peyvand.types import DeviceID, UserID

SINCE = 1_000  # reservations made at or before this no longer count


@pytest.fixture
async def store(database: Database) -> RegistrationTokenStore:
    return RegistrationTokenStore(database)


async def _row(store: RegistrationTokenStore, token: str) -> RegistrationTokenRow:
    row = await store.get(token, SINCE)
    assert row is not None
    return row


async def test_create_get_list_update_delete(store: RegistrationTokenStore) -> None:
    assert not await store.any()
    assert await store.create("b", 3, 9_000, now_ms=2)
    assert await store.create("a", None, None, now_ms=1)
    assert not await store.create("a", 1, 1, now_ms=3)
    assert await store.any()
    assert await store.get("A", SINCE) is None  # tokens are case-sensitive
    assert [r.token for r in await store.list(SINCE)] == ["a", "b"]
    assert await _row(store, "b") == RegistrationTokenRow("b", 3, 0, 0, 9_000)

    kwargs = {"uses_allowed": None, "expiry_time": 7}
    assert await store.update("b", set_uses_allowed=False, set_expiry_time=True, **kwargs)
    assert await _row(store, "b") == RegistrationTokenRow("b", 3, 0, 0, 7)
    assert await store.update("b", set_uses_allowed=True, set_expiry_time=False, **kwargs)
    assert await _row(store, "b") == RegistrationTokenRow("b", None, 0, 0, 7)
    assert not await store.update("zz", set_uses_allowed=True, set_expiry_time=True, **kwargs)

    deleted = await store.delete("b")
    assert deleted is not None and (deleted.token, deleted.expiry_time) == ("b", 7)
    assert await store.delete("b") is None
    assert [r.token for r in await store.list(SINCE)] == ["a"]


async def test_reservations_count_until_completed_released_or_stale(
    store: RegistrationTokenStore,
) -> None:
    await store.create("t", 2, 5_000, now_ms=1)
    assert await store.reserve("t", "r1", now_ms=2_000, pending_since=SINCE)
    assert await store.reserve("t", "r2", now_ms=2_000, pending_since=SINCE)
    assert (await _row(store, "t")).pending == 2
    assert not await store.reserve("t", "r3", now_ms=2_000, pending_since=SINCE)  # used up
    await store.release("r1")
    await store.complete("r2", "t")
    row = await _row(store, "t")
    assert (row.pending, row.completed) == (0, 1)
    assert await store.reserve("t", "r4", now_ms=1_000, pending_since=0)
    # r4 was made at 1000: no longer counted (left by a crash), so a use is free again.
    assert (await _row(store, "t")).pending == 0
    assert await store.reserve("t", "r5", now_ms=5_000, pending_since=SINCE)  # last valid ms
    assert not await store.reserve("t", "r6", now_ms=5_001, pending_since=SINCE)  # expired
    assert not await store.reserve("nope", "r7", now_ms=2_000, pending_since=SINCE)
    # A deleted token's registrations in progress still complete, counting nothing.
    await store.delete("t")
    await store.complete("r5", "t")
    assert await store.get("t", SINCE) is None


async def test_concurrent_reservations_take_each_use_once(
    store: RegistrationTokenStore,
) -> None:
    await store.create("t", 3, None, now_ms=1)
    results = await asyncio.gather(
        *(store.reserve("t", f"r{i}", now_ms=2_000, pending_since=SINCE) for i in range(10))
    )
    assert sum(results) == 3
    assert (await _row(store, "t")).pending == 3


async def test_deviceless_access_tokens_carry_their_expiry(database: Database) -> None:
    accounts = AccountStore(database)
    alice = UserID("@alice:localhost")
    await accounts.create_user(alice, None, is_admin=False, created_ts=1)
    await accounts.create_deviceless_token(
        alice, DeviceID("PUPPET"), "tok", valid_until_ms=99, now_ms=5
    )
    owner = await accounts.get_token_owner("tok")
    assert owner is not None and (owner.device_id, owner.valid_until_ms) == ("PUPPET", 99)
    assert await accounts.get_devices(alice) == []
    assert await accounts.delete_all_devices(alice) == ["tok"]
