"""RemoteDeviceStore on both backends: local device list numbering and the cache of
other servers' users' device lists and cross-signing keys."""

from __future__ import annotations

from peyvand.storage.database import Database
from peyvand.storage.remote_devices import RemoteDevice, RemoteDeviceStore
from peyvand.types import UserID

ALICE = UserID("@alice:example.org")
BOB = UserID("@bob:remote.org")
CAROL = UserID("@carol:remote.org")


async def test_remote_device_store(database: Database) -> None:
    store = RemoteDeviceStore(database)
    assert await store.get_local_stream_id(ALICE) == 0
    assert await store.allocate_local_stream_ids(ALICE, 2) == 0
    assert await store.allocate_local_stream_ids(ALICE, 1) == 2
    assert await store.get_local_stream_id(ALICE) == 3

    assert await store.get_device_list(BOB) is None
    await store.mark_stale(BOB)
    listed = await store.get_device_list(BOB)
    assert listed is not None and (listed.stream_id, listed.stale, listed.devices) == (
        None,
        True,
        (),
    )
    assert await store.get_stale_users(10) == [BOB]
    phone = RemoteDevice("PHONE", "phone", '{"k":1}')
    await store.replace_device_list(BOB, 4, [phone], {"master": '{"m":1}'})
    assert await store.get_stale_users(10) == []
    await store.apply_update(BOB, 5, RemoteDevice("LAPTOP", None, None), deleted=False)
    await store.apply_update(BOB, 6, RemoteDevice("PHONE", None, None), deleted=True)
    await store.set_cross_signing_keys(BOB, {"self_signing": '{"s":1}', "master": '{"m":2}'})
    listed = await store.get_device_list(BOB)
    assert listed is not None
    assert (listed.stream_id, listed.stale) == (6, False)
    assert listed.devices == (RemoteDevice("LAPTOP", None, None),)
    assert listed.cross_signing == (("master", '{"m":2}'), ("self_signing", '{"s":1}'))
    await store.forget_device_list(BOB)
    assert await store.get_device_list(BOB) is None
    # Cross-signing keys of a user never fetched leave them stale.
    await store.set_cross_signing_keys(CAROL, {"master": "{}"})
    listed = await store.get_device_list(CAROL)
    assert listed is not None and listed.stale


async def test_a_fetched_list_older_than_the_one_held_is_not_stored(database: Database) -> None:
    """Another process of a deployment applied an update while this one fetched: the
    older fetched list does not replace it; a stale list is replaced whatever its age."""
    store = RemoteDeviceStore(database)
    phone, laptop = RemoteDevice("PHONE", None, None), RemoteDevice("LAPTOP", None, None)
    await store.replace_device_list(BOB, 5, [phone], {})
    await store.apply_update(BOB, 6, laptop, deleted=False)
    await store.replace_device_list(BOB, 5, [phone], {})
    listed = await store.get_device_list(BOB)
    assert listed is not None
    assert (listed.stream_id, set(listed.devices)) == (6, {phone, laptop})
    await store.mark_stale(BOB)
    await store.replace_device_list(BOB, 5, [phone], {})
    listed = await store.get_device_list(BOB)
    assert listed is not None
    assert (listed.stream_id, listed.stale, listed.devices) == (5, False, (phone,))
