"""E2eKeysService over a real SQLite store with a fake AuthService (End-to-End
Encryption): the /sync counts and their cache, key-change notifications and when
cross-signing uploads ask for user-interactive auth."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from signedjson.key import generate_signing_key
from signedjson.types import SigningKey

from peyvand.events.signing import sign_json, verify_key_base64
from peyvand.services.accounts.auth import AuthService
from peyvand.services.accounts.requester import Requester
from peyvand.services.e2ee.keys import E2eKeysService
from peyvand.storage.accounts import AccountStore, DeviceRow
from peyvand.storage.e2e_keys import E2eKeyStore, NewKey
from peyvand.storage.migrations import run_migrations
from peyvand.storage.sqlite import SqliteDatabase
from peyvand.types import DeviceID, JsonDict, ServerName, UserID

ALICE = UserID("@alice:localhost")
DEVICE = DeviceID("PHONE")
REQUESTER = Requester(ALICE, DEVICE, token_id=1)
SIGNED = "signed_curve25519"


@dataclass
class FakeAuth:
    """What the service uses of AuthService: UIA and the device list."""

    accounts: AccountStore
    uia_operations: list[str] = field(default_factory=list)

    async def require_password(
        self, requester: Requester, auth: Mapping[str, Any] | None, operation: str
    ) -> None:
        self.uia_operations.append(operation)

    async def get_devices(self, user_id: UserID) -> list[DeviceRow]:
        return await self.accounts.get_devices(user_id)


@dataclass
class World:
    service: E2eKeysService
    store: E2eKeyStore
    auth: FakeAuth
    changed: list[UserID]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    db = await SqliteDatabase.open(str(tmp_path / "keys.db"))
    try:
        await run_migrations(db)
        accounts = AccountStore(db)
        await accounts.create_user(ALICE, None, is_admin=False, created_ts=1)
        await accounts.create_access_token(
            ALICE, DEVICE, "token", display_name=None, ip=None, now_ms=1
        )
        changed: list[UserID] = []

        async def on_keys_changed(user_id: UserID, *, only_to: UserID | None = None) -> None:
            changed.append(user_id)

        store = E2eKeyStore(db)
        auth = FakeAuth(accounts)
        service = E2eKeysService(
            ServerName("localhost"),
            store,
            cast(AuthService, auth),
            on_keys_changed,
            clock=lambda: 1.0,
        )
        yield World(service, store, auth, changed)
    finally:
        await db.close()


def _device_keys(key: SigningKey) -> JsonDict:
    body = {
        "user_id": ALICE,
        "device_id": DEVICE,
        "algorithms": ["m.megolm.v1.aes-sha2"],
        "keys": {f"ed25519:{DEVICE}": verify_key_base64(key)},
    }
    return sign_json(body, ALICE, key)


def _otks(key: SigningKey, names: Sequence[str]) -> JsonDict:
    return {f"{SIGNED}:{n}": sign_json({"key": n}, ALICE, key) for n in names}


async def test_counts_are_cached_and_invalidated_by_uploads_claims_and_deletion(
    world: World,
) -> None:
    service, key = world.service, generate_signing_key(DEVICE)
    assert await service.one_time_key_counts(ALICE, DEVICE) == {SIGNED: 0}
    assert await service.unused_fallback_key_types(ALICE, DEVICE) == []
    # A write behind the service's back is not seen: the counts come from the cache.
    await world.store.store_keys(
        ALICE,
        DEVICE,
        device_keys_json=None,
        one_time_keys=[],
        fallback_keys=[NewKey("curve25519", "x", '"x"')],
        now_ms=1,
    )
    assert await service.unused_fallback_key_types(ALICE, DEVICE) == []
    body = {
        "device_keys": _device_keys(key),
        "one_time_keys": _otks(key, ["a", "b"]),
        "fallback_keys": {f"{SIGNED}:fb": sign_json({"key": "fb", "fallback": True}, ALICE, key)},
    }
    assert await service.upload_keys(REQUESTER, body) == {SIGNED: 2}
    assert await service.one_time_key_counts(ALICE, DEVICE) == {SIGNED: 2}
    assert await service.unused_fallback_key_types(ALICE, DEVICE) == ["curve25519", SIGNED]

    wanted: dict[str, dict[str, str]] = {ALICE: {DEVICE: SIGNED}}
    for _ in range(2):
        await service.claim_keys(wanted)
    assert await service.one_time_key_counts(ALICE, DEVICE) == {SIGNED: 0}
    assert await service.unused_fallback_key_types(ALICE, DEVICE) == ["curve25519", SIGNED]
    await service.claim_keys(wanted)
    assert await service.unused_fallback_key_types(ALICE, DEVICE) == ["curve25519"]

    await service.upload_keys(REQUESTER, {"one_time_keys": _otks(key, ["c"])})
    await world.auth.accounts.delete_devices(ALICE, [DEVICE])
    await service.on_devices_deleted(ALICE, [DEVICE])
    assert await service.one_time_key_counts(ALICE, DEVICE) == {SIGNED: 0}


async def test_only_real_key_changes_are_notified(world: World) -> None:
    service, key = world.service, generate_signing_key(DEVICE)
    keys = _device_keys(key)
    await service.upload_keys(REQUESTER, {"device_keys": keys})
    await service.upload_keys(REQUESTER, {"device_keys": keys})
    await service.upload_keys(REQUESTER, {"one_time_keys": _otks(key, ["a"])})
    assert world.changed == [ALICE]


async def test_cross_signing_uia_only_when_a_key_is_replaced(world: World) -> None:
    service = world.service
    master = generate_signing_key("m")
    public = verify_key_base64(master)
    master_json = {"user_id": ALICE, "usage": ["master"], "keys": {f"ed25519:{public}": public}}
    await service.upload_cross_signing_keys(REQUESTER, {"master_key": master_json})
    await service.upload_cross_signing_keys(REQUESTER, {"master_key": master_json})
    assert world.auth.uia_operations == []
    assert world.changed == [ALICE]

    other = verify_key_base64(generate_signing_key("n"))
    replacement = {**master_json, "keys": {f"ed25519:{other}": other}}
    await service.upload_cross_signing_keys(REQUESTER, {"master_key": replacement})
    assert world.auth.uia_operations == ["POST /keys/device_signing/upload"]
    assert world.changed == [ALICE, ALICE]
    stored = await world.store.get_cross_signing_keys([ALICE])
    assert [row.public_key for row in stored] == [other]
