"""AccountStore contract: the same behaviour on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from peyvand.storage.accounts import AccountStore
from peyvand.storage.database import Database
from peyvand.storage.errors import ConflictError, NotFoundError
from peyvand.types import DeviceID, UserID

ALICE = UserID("@alice:localhost")
BOB = UserID("@bob:localhost")


@pytest.fixture
async def store(database: Database) -> AccountStore:
    """A migrated, empty database of the backend under test, with alice and bob."""
    accounts = AccountStore(database)
    for user_id in (ALICE, BOB):
        await accounts.create_user(user_id, "hash", is_admin=False, created_ts=1)
    return accounts


async def _login(store: AccountStore, user_id: UserID, device: str, token: str) -> list[str]:
    _, revoked = await store.create_access_token(
        user_id, DeviceID(device), token, display_name=f"{device} name", ip="10.0.0.1", now_ms=5
    )
    return revoked


async def test_users(store: AccountStore) -> None:
    with pytest.raises(ConflictError):
        await store.create_user(ALICE, None, is_admin=True, created_ts=2)
    alice = await store.get_user(ALICE)
    assert alice is not None
    assert (alice.password_hash, alice.is_admin, alice.deactivated) == ("hash", False, False)
    assert await store.get_user("@nobody:localhost") is None


async def test_tokens_and_devices(store: AccountStore) -> None:
    assert await _login(store, ALICE, "D1", "t1") == []
    owner = await store.get_token_owner("t1")
    assert owner is not None
    assert (owner.user_id, owner.device_id, owner.deactivated) == (ALICE, "D1", False)
    assert await _login(store, ALICE, "D1", "t2") == ["t1"]
    assert await store.get_token_owner("t1") is None
    device = await store.get_device(ALICE, "D1")
    assert device is not None and device.display_name == "D1 name"

    await store.set_device_display_name(ALICE, "D1", "renamed")
    assert [d.display_name for d in await store.get_devices(ALICE)] == ["renamed"]
    with pytest.raises(NotFoundError):
        await store.set_device_display_name(BOB, "D1", "not bob's")


async def test_bulk_device_deletion_is_per_user(store: AccountStore) -> None:
    devices = [f"D{i:04d}" for i in range(1200)]  # more than one IN-list chunk
    for device in devices:
        await _login(store, ALICE, device, f"alice-{device}")
    await _login(store, BOB, "D0001", "bob-D0001")
    removed = await store.delete_devices(ALICE, [*devices[:-1], "UNKNOWN"])
    assert sorted(removed) == sorted(f"alice-{d}" for d in devices[:-1])
    assert [d.device_id for d in await store.get_devices(ALICE)] == [devices[-1]]
    assert await store.get_token_owner("bob-D0001") is not None


async def test_password_change_and_deactivation(store: AccountStore) -> None:
    for device in ("A", "B", "C"):
        await _login(store, ALICE, device, f"t{device}")
    removed = await store.set_password_hash(ALICE, "new", keep_device=DeviceID("B"))
    assert sorted(removed) == ["tA", "tC"]
    assert [d.device_id for d in await store.get_devices(ALICE)] == ["B"]
    assert await store.set_password_hash(ALICE, "newer", keep_device=None) == []

    assert await store.deactivate_user(ALICE) == ["tB"]
    alice = await store.get_user(ALICE)
    assert alice is not None and alice.deactivated and alice.password_hash is None
    assert await store.get_devices(ALICE) == []


async def test_filters_are_content_addressed_per_user(store: AccountStore) -> None:
    room_filter = {"room": {"timeline": {"limit": 10}}, "presence": {"types": []}}
    same_reordered = {"presence": {"types": []}, "room": {"timeline": {"limit": 10}}}
    filter_id = await store.add_filter(ALICE, room_filter)
    assert await store.add_filter(ALICE, same_reordered) == filter_id
    assert "{" not in filter_id
    other_id = await store.add_filter(ALICE, {"room": {"timeline": {"limit": 20}}})
    assert other_id != filter_id
    assert await store.get_filter(ALICE, filter_id) == room_filter
    assert await store.get_filter(BOB, filter_id) is None
    assert await store.get_filter(ALICE, "unknown") is None
