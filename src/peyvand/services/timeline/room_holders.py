"""Which event writer creates each writer's rooms now (issue 21: "the dead process's rooms
are taken over within 10 s"; ``storage.room_writers``).

Every process of a deployment keeps ``RoomOwners``' holders as stored: read every
``CHECK_SECONDS`` and when a writer tells of a change on the bus. Each event writer, in
the same loop, takes over the rooms of a writer that is not running (its instance
name's lock is free; the writer that holds them is not running either) and hands a
writer's rooms back once it runs again. So a dead writer's rooms are written again
within about ``CHECK_SECONDS`` plus the catch-up below, and nginx, which sends a room's
writes to its owner and else to the other writers (``peyvand deployment nginx``), finds
them there.

Before a writer creates events in rooms it gained, it has announced everything stored
by then (``catch_up``: the previous holder's last events, which it hears as any other
writer's), and it forgets its cached snapshots of them (``forget``), which the
events stream keeps the state of but not the forward extremities: they are loaded again
from the database, where the previous holder's commits are complete (a change of holder
waits for them, and refuses the later ones: ``storage.room_writers.fence_rooms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from peyvand.background import BackgroundTask
from peyvand.services.timeline.room_owners import RoomOwners
from peyvand.storage.bus import Bus
from peyvand.storage.room_writers import Holding, RoomWriterStore

logger = logging.getLogger(__name__)

CHANNEL: Final = "room_writers"
# How often the holders are read, and each writer checks for writers not running.
CHECK_SECONDS: Final = 1.0
# How long a writer that gained rooms waits, at most, to have announced what is stored.
CATCH_UP_SECONDS: Final = 10.0


class RoomHolders:
    def __init__(
        self,
        bus: Bus,
        store: RoomWriterStore,
        owners: RoomOwners,
        *,
        instance: str | None = None,
        catch_up: Callable[[], Awaitable[None]] | None = None,
        forget: Callable[[frozenset[str]], None] | None = None,
    ) -> None:
        """``instance``: this process, when it is one of the event writers; ``catch_up``
        returns once it has announced what is stored now; ``forget`` drops its cached
        snapshots of the rooms of the writers named."""
        self._bus = bus
        self._store = store
        self._owners = owners
        self._instance = instance
        self._catch_up = catch_up
        self._forget = forget
        self._wake = asyncio.Event()
        self._serving = False
        self._task = BackgroundTask("room writers", self._run)

    async def start(self) -> None:
        self._bus.subscribe(CHANNEL, self._on_message)
        if self._instance is not None:
            await self._store.register(self._instance)
        self._owners.update(await self._store.holders())
        self._task.start()

    async def serving(self) -> None:
        """This writer serves requests (its internal API too): the writer holding its
        rooms may hand them back (asked again at each check while it holds them)."""
        self._serving = True
        if self._instance is not None:
            await self._store.want_back(self._instance)

    async def stop(self) -> None:
        await self._task.stop()

    def _on_message(self, _payload: dict[str, Any], _sender: str) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), CHECK_SECONDS)
            self._wake.clear()
            try:
                await self.check()
            except Exception:
                logger.exception("checking the room writers failed")

    async def check(self) -> None:
        """Take over and hand back rooms (an event writer), then follow the holders."""
        stored = await self._store.holders()
        if self._instance is not None and await self._move(self._instance, stored):
            self._bus.publish(CHANNEL, {})
            stored = await self._store.holders()
        await self._follow(stored)

    async def _move(self, instance: str, stored: Mapping[str, Holding]) -> bool:
        moved = False
        for writer in self._owners.writers:
            holder = stored[writer].holder if writer in stored else writer
            if holder == instance and writer != instance:
                if await self._store.hand_back(writer, instance):
                    logger.info("event writer %s runs again: its rooms are handed back", writer)
                    moved = True
            elif holder != instance and await self._store.take(writer, instance):
                logger.warning("event writer %s is not running: its rooms are written here", holder)
                moved = True
            elif writer == instance and holder != instance and self._serving:
                # Its lock was lost and taken again: running, its rooms held elsewhere.
                await self._store.want_back(instance)
        return moved

    async def _follow(self, stored: Mapping[str, Holding]) -> None:
        """Follow the stored holdings. The rooms of a holding that changed (another
        holder, or the same after changes this process missed) are forgotten at once
        when lost; when gained, once what their previous holders stored is announced
        here (else kept with their previous holder, tried again at the next check)."""
        owners, instance = self._owners, self._instance
        changed = frozenset(
            w for w in owners.writers if stored.get(w, Holding(w, 0)) != owners.holding(w)
        )
        if not changed:
            return
        gained = frozenset(w for w in changed if stored.get(w, Holding(w, 0)).holder == instance)
        if gained:
            kept = {w: owners.holding(w) for w in gained}
            owners.update({**stored, **kept})
            if self._forget is not None:
                self._forget(changed - gained)
            if self._catch_up is not None:
                try:
                    await asyncio.wait_for(self._catch_up(), CATCH_UP_SECONDS)
                except TimeoutError:
                    logger.error(
                        "taking the rooms of %s: the events stored were not announced "
                        "within %d s; trying again",
                        ", ".join(sorted(gained)),
                        CATCH_UP_SECONDS,
                    )
                    return
        owners.update(stored)
        if self._forget is not None:
            self._forget(changed)
