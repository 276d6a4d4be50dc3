"""E2eKeyStore contract: the same behaviour on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from peyvand.storage.accounts import AccountStore
from peyvand.storage.database import Database
from peyvand.storage.e2e_keys import (
    ClaimedKey,
    CrossSigningKeyRow,
    E2eKeyStore,
    NewKey,
    SignatureRow,
)
from peyvand.types import DeviceID, UserID

ALICE = UserID("@alice:localhost")
BOB = UserID("@bob:localhost")
D1, D2 = DeviceID("D1"), DeviceID("D2")


@pytest.fixture
async def stores(database: Database) -> tuple[E2eKeyStore, AccountStore]:
    """A migrated database with alice (devices D1, D2) and bob (D1)."""
    accounts = AccountStore(database)
    for user_id, device_ids in ((ALICE, (D1, D2)), (BOB, (D1,))):
        await accounts.create_user(user_id, "hash", is_admin=False, created_ts=1)
        for device_id in device_ids:
            await accounts.create_access_token(
                user_id,
                device_id,
                f"t-{user_id}-{device_id}",
                display_name=f"{device_id}!",
                ip=None,
                now_ms=1,
            )
    return E2eKeyStore(database), accounts


async def test_one_time_keys_count_and_claim_in_upload_order(
    stores: tuple[E2eKeyStore, AccountStore],
) -> None:
    store, _ = stores
    first = [NewKey("signed_curve25519", f"k{i}", f'"first{i}"') for i in range(3)]
    await store.store_keys(
        ALICE, D1, device_keys_json=None, one_time_keys=first, fallback_keys=[], now_ms=10
    )
    await store.store_keys(
        ALICE,
        D1,
        device_keys_json=None,
        one_time_keys=[
            NewKey("signed_curve25519", "a0", '"second"'),
            NewKey("curve25519", "c", '"c"'),
        ],
        fallback_keys=[],
        now_ms=20,
    )
    assert await store.count_one_time_keys(ALICE, D1) == {"signed_curve25519": 4, "curve25519": 1}
    assert await store.get_one_time_keys(ALICE, D1, [("signed_curve25519", "k1"), ("x", "y")]) == {
        ("signed_curve25519", "k1"): '"first1"'
    }
    claims = [(ALICE, D1, "signed_curve25519")]
    taken = [(await store.claim_keys(claims))[claims[0]].key_id for _ in range(4)]
    assert taken[:3] == ["k0", "k1", "k2"] and taken[3] == "a0"
    assert await store.claim_keys(claims) == {}
    assert await store.count_one_time_keys(ALICE, D1) == {"curve25519": 1}


async def test_concurrent_claims_never_share_a_key(
    stores: tuple[E2eKeyStore, AccountStore],
) -> None:
    store, _ = stores
    keys = [NewKey("signed_curve25519", f"k{i:03}", f'"{i}"') for i in range(40)]
    await store.store_keys(
        ALICE,
        D2,
        device_keys_json=None,
        one_time_keys=keys,
        fallback_keys=[NewKey("signed_curve25519", "fb", '"fb"')],
        now_ms=1,
    )
    claim = (ALICE, D2, "signed_curve25519")
    results = await asyncio.gather(*(store.claim_keys([claim]) for _ in range(60)))
    one_time = [r[claim].key_id for r in results if not r[claim].fallback]
    assert sorted(one_time) == sorted(k.key_id for k in keys)
    assert [r[claim] for r in results if r[claim].fallback] == [ClaimedKey("fb", '"fb"', True)] * 20


async def test_fallback_keys_replace_per_algorithm_and_track_use(
    stores: tuple[E2eKeyStore, AccountStore],
) -> None:
    store, _ = stores
    fallback = [NewKey("signed_curve25519", "f1", '"one"')]
    await store.store_keys(
        BOB, D1, device_keys_json=None, one_time_keys=[], fallback_keys=fallback, now_ms=1
    )
    assert await store.unused_fallback_key_types(BOB, D1) == ["signed_curve25519"]
    claim = (BOB, D1, "signed_curve25519")
    assert (await store.claim_keys([claim]))[claim] == ClaimedKey("f1", '"one"', True)
    assert (await store.claim_keys([claim]))[claim] == ClaimedKey("f1", '"one"', True)
    assert await store.unused_fallback_key_types(BOB, D1) == []
    # The same key again stays used; a new one is unused.
    await store.store_keys(
        BOB, D1, device_keys_json=None, one_time_keys=[], fallback_keys=fallback, now_ms=2
    )
    assert await store.unused_fallback_key_types(BOB, D1) == []
    await store.store_keys(
        BOB,
        D1,
        device_keys_json=None,
        one_time_keys=[],
        fallback_keys=[NewKey("signed_curve25519", "f2", '"two"')],
        now_ms=3,
    )
    assert await store.unused_fallback_key_types(BOB, D1) == ["signed_curve25519"]
    assert (await store.claim_keys([claim]))[claim].key_id == "f2"


async def test_device_keys_join_devices_and_go_with_them(
    stores: tuple[E2eKeyStore, AccountStore],
) -> None:
    store, accounts = stores
    for user_id, device_id in ((ALICE, D1), (ALICE, D2), (BOB, D1)):
        await store.store_keys(
            user_id,
            device_id,
            device_keys_json=f'{{"d":"{device_id}"}}',
            one_time_keys=[NewKey("a", "k", '"k"')],
            fallback_keys=[NewKey("a", "f", '"f"')],
            now_ms=1,
        )
    assert await store.get_device_keys_json(ALICE, D2) == '{"d":"D2"}'
    await store.set_cross_signing_keys(
        ALICE, [CrossSigningKeyRow(ALICE, "self_signing", "ssk", "{}")], 1
    )
    rows = await store.get_device_keys([ALICE], [(BOB, D1), (BOB, DeviceID("nope"))])
    assert sorted((r.user_id, r.device_id, r.display_name) for r in rows) == [
        (ALICE, D1, "D1!"),
        (ALICE, D2, "D2!"),
        (BOB, D1, "D1!"),
    ]
    await store.store_signatures(
        [
            SignatureRow(ALICE, "D2", ALICE, "ed25519:ssk", "sig-of-d2"),
            SignatureRow(ALICE, "masterpub", ALICE, "ed25519:D2", "d2-signs-master"),
            SignatureRow(ALICE, "D1", ALICE, "ed25519:ssk", "sig-of-d1"),
        ]
    )
    await accounts.delete_devices(ALICE, [D2])
    assert [r.device_id for r in await store.get_device_keys([ALICE], [])] == [D1]
    assert await store.delete_keys_of_deleted_devices(ALICE) is True
    assert await store.delete_keys_of_deleted_devices(ALICE) is False
    assert await store.get_device_keys_json(ALICE, D2) is None
    assert await store.count_one_time_keys(ALICE, D2) == {}
    assert await store.unused_fallback_key_types(ALICE, D2) == []
    sigs = await store.get_signatures([ALICE], BOB)
    assert [(s.target_device_id, s.signature) for s in sigs] == [("D1", "sig-of-d1")]


async def test_cross_signing_keys_and_signature_visibility(
    stores: tuple[E2eKeyStore, AccountStore],
) -> None:
    store, _ = stores
    await store.set_cross_signing_keys(
        ALICE,
        [
            CrossSigningKeyRow(ALICE, "master", "m1", '{"m":1}'),
            CrossSigningKeyRow(ALICE, "self_signing", "s1", '{"s":1}'),
        ],
        1,
    )
    await store.set_cross_signing_keys(
        BOB, [CrossSigningKeyRow(BOB, "user_signing", "u1", "{}")], 1
    )
    await store.store_signatures(
        [
            SignatureRow(ALICE, "m1", BOB, "ed25519:u1", "bob-signs-alice"),
            SignatureRow(ALICE, "D1", ALICE, "ed25519:s1", "s1-signs-d1"),
        ]
    )
    assert {s.signature for s in await store.get_signatures([ALICE], BOB)} == {
        "bob-signs-alice",
        "s1-signs-d1",
    }
    assert {s.signature for s in await store.get_signatures([ALICE], ALICE)} == {"s1-signs-d1"}
    # A new self-signing key drops the signatures the old one made; a new master key the
    # signatures of the old one.
    await store.set_cross_signing_keys(
        ALICE,
        [
            CrossSigningKeyRow(ALICE, "master", "m2", '{"m":2}'),
            CrossSigningKeyRow(ALICE, "self_signing", "s2", '{"s":2}'),
        ],
        2,
    )
    assert await store.get_signatures([ALICE], BOB) == []
    rows = await store.get_cross_signing_keys([ALICE, BOB])
    assert sorted((r.user_id, r.key_type, r.public_key) for r in rows) == [
        (ALICE, "master", "m2"),
        (ALICE, "self_signing", "s2"),
        (BOB, "user_signing", "u1"),
    ]
