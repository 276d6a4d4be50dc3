"""PusherStore contract on both backends: a pusher replaced with new data (a new gateway
URL) starts unfailed, and what its old gateway's answers cause (a failure recorded, a
deletion after ``rejected`` or a day of failures) does not touch the replacement."""

from __future__ import annotations

from typing import Any

import pytest

from peyvand.storage.database import Database
from peyvand.storage.pushers import PusherRow, PusherStore
from peyvand.types import UserID

ALICE = UserID("@alice:localhost")
OLD = "https://old.example/_matrix/push/v1/notify"
NEW = "https://new.example/_matrix/push/v1/notify"


@pytest.fixture
def store(database: Database) -> PusherStore:
    return PusherStore(database)


def row(url: str, **data: Any) -> PusherRow:
    return PusherRow(
        ALICE, "app", "key", "DEVICE", "http", "App", "Phone", None, "en", {"url": url, **data}, 1
    )


async def failing_since(store: PusherStore) -> int | None:
    (state,) = await store.get_deliveries("http", [ALICE])
    return state.failing_since


async def test_failing_since_is_kept_for_the_same_data_and_reset_for_new(
    store: PusherStore,
) -> None:
    await store.set_pusher(row(OLD), append=False)
    await store.set_failing_since(row(OLD), 1000)
    await store.set_pusher(row(OLD), append=False)  # set again, unchanged
    assert await failing_since(store) == 1000
    await store.set_pusher(row(NEW), append=False)
    assert await failing_since(store) is None


async def test_the_old_gateways_answers_leave_a_replacement_alone(store: PusherStore) -> None:
    await store.set_pusher(row(OLD), append=False)
    await store.set_pusher(row(NEW), append=False)
    await store.set_failing_since(row(OLD), 1000)
    assert await failing_since(store) is None
    assert not await store.delete_if_unchanged(row(OLD))
    assert [p.data["url"] for p in await store.get_pushers(ALICE)] == [NEW]
    assert await store.delete_if_unchanged(row(NEW))
    assert await store.get_pushers(ALICE) == []
