"""Device list positions with several processes recording changes (issue 21): a client
reader's fetch of another server's user's devices records a change as the writer does;
each takes the next stored position, never one another process holds."""

from __future__ import annotations

import asyncio

from peyvand.storage.database import Database
from peyvand.storage.device_lists import DeviceListStore
from peyvand.types import UserID

ALICE = UserID("@alice:remote.test")


async def test_two_processes_never_take_one_position(database: Database) -> None:
    writer, reader = DeviceListStore(database), DeviceListStore(database)
    assert await writer.add_change(ALICE, 0) == 1
    # The reader has not heard of position 1 (its own notion is still 0).
    assert await reader.add_change(ALICE, 0) == 2
    # Behind what this process already gave out: still above it.
    assert await writer.add_change(ALICE, 10) == 11
    taken = await asyncio.gather(*(s.add_change(ALICE, 0) for s in (writer, reader) * 5))
    assert sorted(taken) == list(range(12, 22))
    assert await writer.get_changed_users(0, 21) == {ALICE}
