"""Standing in for an event writer that is not running (issue 21, several event writers).

Every process follows the events stream up to the lowest writer's position
(``event_follower``), so a writer that died (or was never started) would hold every
process's stream where it stopped, the live writers' own commits included. Each live
writer therefore checks the others every ``CHECK_SECONDS``: for one that no live process
runs as (its instance name's advisory lock is free, ``StreamPositionStore.advance_absent``,
which holds that lock for the transaction so the writer cannot start meanwhile), it
records and publishes its own newest position as the absent writer's. The claim holds:
an absent writer commits nothing, and when it starts again it allocates above every
position stored by then, this one included (``EventPositionPublisher.start``).

A writer is taken for absent when its instance name's lock is free, which also happens
to a live writer whose lock connection closed (it takes the name again within seconds).
So every writer's commit reads its own recorded position first (``fence``, ``FOR
SHARE``): a stand-in's move waits for the commits in flight, and a commit below a
position moved so is refused (the client gets an error, the event is not stored), never
stored below a position the readers passed. The writer then allocates above the
position it was moved to (``EventPositionPublisher``).

A dead writer's rooms are taken over by a live writer (``room_holders``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from peyvand.background import BackgroundTask
from peyvand.services.timeline.event_follower import CHANNEL, STREAM
from peyvand.services.timeline.event_writer import PreCommitHook, TxnWrite
from peyvand.services.timeline.room_owners import RoomOwners
from peyvand.storage.bus import Bus
from peyvand.storage.database import Connection
from peyvand.storage.models import EventToPersist
from peyvand.storage.room_writers import fence_rooms
from peyvand.storage.stream_positions import StreamPositionStore, fence

logger = logging.getLogger(__name__)

# How often the other writers are checked.
CHECK_SECONDS = 1.0


class AbsentWriters:
    def __init__(
        self,
        bus: Bus,
        positions: StreamPositionStore,
        others: Sequence[str],
        newest: Callable[[], int],
    ) -> None:
        """``others``: the deployment's other event writers; ``newest``: the position
        this writer published last (committed, or heard of another)."""
        self._bus = bus
        self._positions = positions
        self._others = tuple(others)
        self._newest = newest
        self._task = BackgroundTask("absent event writers", self._check)

    async def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _check(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            for writer in self._others:
                try:
                    await self.stand_in(writer)
                except Exception:
                    logger.exception("standing in for event writer %s failed", writer)

    async def stand_in(self, writer: str) -> bool:
        """Move ``writer`` to this writer's newest position if it is not running."""
        position = self._newest()
        if not await self._positions.advance_absent(STREAM, writer, position):
            return False
        self._bus.publish(CHANNEL, {"p": position, "w": writer})
        return True


def commit_fence(instance: str, owners: RoomOwners) -> PreCommitHook:
    """The ``EventWriter`` pre-commit hook of one of several writers: its commit is
    refused if another writer moved its position past the batch (``fence``), or holds
    the rooms of one of the batch's events now (``fence_rooms``)."""

    async def hook(batch: Sequence[EventToPersist]) -> TxnWrite | None:
        lowest = min((e.stream_ordering for e in batch if e.stream_ordering > 0), default=None)
        # The generation each event was built under (the oldest, if they differ: that
        # event is refused, and the others commit without it).
        rooms_of: dict[str, int] = {}
        for event in batch:
            shard = owners.shard(event.pdu.room_id)
            built = owners.holding(shard).generation if event.holding is None else event.holding
            rooms_of[shard] = min(rooms_of.get(shard, built), built)

        async def write(txn: Connection) -> None:
            if lowest is not None:
                await fence(txn, STREAM, instance, lowest)
            await fence_rooms(txn, instance, rooms_of)

        return write

    return hook
