"""The primary event writer of a deployment with several (issue 21: "the dead process's
rooms and jobs are taken over within 10 s").

One writer at a time takes every write but a room's events (``api.primary_gate``): the
streams other than the events' (account data, receipts, to-device, typing, presence),
whose positions one process allocates, and what creates or changes rooms and accounts.
It also runs the jobs those writes feed as they happen (push and appservice delivery,
the policy lists: ``wiring.leased.background_jobs``, ``on_writer``).

The role is a PostgreSQL session advisory lock (``PRIMARY_KEY``), which the database
lets go at once when its holder dies. Each writer holds its ``ready_key`` once its
``PrimaryWriter`` started (near the end of its start-up; taken again if its connection
closes). The first writer takes the role whenever it can; another takes it within
``CHECK_SECONDS`` while neither the first nor a writer before it in the configured order
is ready. Taking it, a writer first takes what the stream relay finds stored beyond
what it heard for missed (the previous primary may have died between a commit and its
bus message), continues each stream above (``resume``), admits the primary's requests
and starts the jobs. When the first writer is ready again, the other stops admitting
them (503: nginx lists the other writers as the first's backups, and a client
retries), waits for the ones running (until none is left; it stays the primary if the
first is no longer ready meanwhile), stops the jobs (each bounded by
``JOB_STOP_SECONDS``) and lets the lock go. A holder whose lock connection closes
stops admitting at once.

Not fenced at commit (unlike a room's events, ``storage.room_writers``): a primary
whose lock connection closes while requests of its run lets them finish (at most
``DRAIN_SECONDS``) while another may already be primary, so their stream positions may
meet; and nginx spreads the first's requests over its backups, so with three or more
writers those reaching a writer that is not primary get a 503 to retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Final

from peyvand.api.primary_gate import PrimaryGate
from peyvand.background import BackgroundTask
from peyvand.config import WorkersConfig
from peyvand.storage.database import AdvisoryLocks, Database
from peyvand.wiring.lifecycle import Component, Hooks, run_step

logger = logging.getLogger(__name__)

PRIMARY_KEY: Final = int.from_bytes(
    hashlib.blake2b(b"peyvand primary event writer", digest_size=8).digest(), "big", signed=True
)
# How long stopping one of the primary's jobs may take before it is left.
JOB_STOP_SECONDS: Final = 5.0
# How often a writer checks whether it should take the role, or hand it back.
CHECK_SECONDS: Final = 1.0
# How long handing the role back waits for the primary's requests running here.
DRAIN_SECONDS: Final = 10.0
# How long the first writer's start waits for the role to come back to it.
START_SECONDS: Final = DRAIN_SECONDS + 5 * CHECK_SECONDS

Resume = Callable[[], Awaitable[None]]


def ready_key(writer: str) -> int:
    """The advisory lock a writer holds once it is ready to be the primary (its
    ``PrimaryWriter`` started): the first's tells the others to hand the role back, the
    others' who takes it while the first is not ready."""
    digest = hashlib.blake2b(f"peyvand primary ready {writer}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PrimaryWriter:
    def __init__(
        self,
        db: Database,
        locks: AdvisoryLocks,
        instance: str,
        writers: Sequence[str],
        gate: PrimaryGate,
    ) -> None:
        """``writers``: the deployment's event writers in configured order, the first
        preferred; ``gate`` admits the primary's requests while this process holds it."""
        self._db = db
        self._locks = locks
        self._instance = instance
        self._first = writers[0]
        self._writers = tuple(writers)
        # This writer's ``ready_key`` lock, once taken; lost with its connection.
        self._ready: AsyncExitStack | None = None
        self._ready_lost = False
        self._gate = gate
        self._jobs: list[tuple[str, Component | Hooks]] = []
        self._resume: list[Resume] = []
        self._held: AsyncExitStack | None = None
        self._started: list[tuple[str, Component | Hooks]] = []
        self._lost = asyncio.Event()
        self._task = BackgroundTask("primary event writer", self._run)

    @property
    def gate(self) -> PrimaryGate:
        return self._gate

    def add_job(self, name: str, job: Component | Hooks) -> None:
        """Run ``job`` while this process is the primary writer."""
        self._jobs.append((name, job))

    def on_taken(self, resume: Resume) -> None:
        """Run ``resume`` when this process becomes the primary, before it admits any
        of its requests (a stream continuing above what is stored)."""
        self._resume.append(resume)

    @property
    def held(self) -> bool:
        return self._held is not None

    async def start(self) -> None:
        """Ready from here (``ready_key``); the first writer waits (at most
        ``START_SECONDS``) for another that took the role meanwhile to hand it back, so
        that it serves as the primary from the start."""
        await self.check()
        if self._instance == self._first:
            deadline = asyncio.get_running_loop().time() + START_SECONDS
            while self._held is None and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(CHECK_SECONDS / 4)
                await self.check()
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
        await self._let_go(handing_back=False)
        await self._unready()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), CHECK_SECONDS)
            try:
                await self.check()
            except Exception:
                logger.exception("checking the primary event writer role failed")

    async def check(self) -> None:
        """Take the role if this process should have it, hand it back if not."""
        if self._lost.is_set():
            self._lost.clear()
            logger.error("the primary event writer lock was lost (its connection closed)")
            await self._let_go(handing_back=False)
        if not await self._keep_ready():
            return
        if self._held is None:
            if await self._ought_to_hold():
                await self._take()
        elif self._instance != self._first:
            if await self._is_ready(self._first):
                logger.info(
                    "event writer %s is ready again: the primary role goes back", self._first
                )
                await self._let_go(handing_back=True)
            elif not self._gate.held:
                # A handback whose requests outlasted the drain, and the first writer is
                # not ready any more: this one stays the primary.
                self._gate.held = True

    async def _keep_ready(self) -> bool:
        """Hold this writer's ``ready_key`` (taken again once lost); whether it does."""
        if self._ready_lost:
            self._ready_lost = False
            await self._unready()
        if self._ready is None:
            ready = AsyncExitStack()
            lock = self._locks.advisory_lock(
                ready_key(self._instance), wait=False, on_lost=self._on_ready_lost
            )
            if await ready.enter_async_context(lock):
                self._ready = ready
            else:
                # Another writer's check holds it for a moment: taken at the next one.
                await ready.aclose()
        return self._ready is not None

    def _on_ready_lost(self) -> None:
        self._ready_lost = True

    async def _unready(self) -> None:
        ready, self._ready = self._ready, None
        if ready is not None:
            with contextlib.suppress(Exception):
                await ready.aclose()

    async def _is_ready(self, writer: str) -> bool:
        """``writer`` runs and is ready to be the primary (it holds its ``ready_key``)."""
        async with self._db.transaction() as txn:
            return not await txn.fetchval("SELECT pg_try_advisory_xact_lock($1)", ready_key(writer))

    async def _ought_to_hold(self) -> bool:
        """The first writer, always; another while the first is not ready and no writer
        before it in the configured order is (one taker at a time)."""
        if self._instance == self._first:
            return True
        for writer in self._writers[: self._writers.index(self._instance)]:
            if await self._is_ready(writer):
                return False
        return True

    async def _take(self) -> None:
        held = AsyncExitStack()
        lock = self._locks.advisory_lock(PRIMARY_KEY, wait=False, on_lost=self._on_lost)
        if not await held.enter_async_context(lock):
            await held.aclose()
            return
        self._held = held
        try:
            for resume in self._resume:
                await resume()
        except BaseException:
            await self._let_go(handing_back=False)
            raise
        if self._lost.is_set():
            return  # lost while resuming: let go at the next check
        self._gate.held = True
        if self._instance != self._first:
            logger.warning("event writer %s does not serve: this one is primary", self._first)
        for name, job in self._jobs:
            try:
                await run_step(job.start)
            except Exception:
                logger.exception("starting %s failed", name)
                continue
            self._started.append((name, job))

    def _on_lost(self) -> None:
        # Refused from now on: another writer may take the role at once.
        self._gate.held = False
        self._lost.set()

    async def _let_go(self, *, handing_back: bool) -> None:
        """Stop admitting the primary's requests and running its jobs, and let the lock
        go. Handing the role back waits for the requests running here first (kept, gate
        closed, until the next check if they outlast ``DRAIN_SECONDS``)."""
        self._gate.held = False
        if self._held is None:
            return
        if not await self._gate.drained(DRAIN_SECONDS):
            logger.error("requests of the primary writer still run after %d s", DRAIN_SECONDS)
            if handing_back:
                return
        while self._started:
            name, job = self._started.pop()
            try:
                async with asyncio.timeout(JOB_STOP_SECONDS):
                    await run_step(job.stop)
            except Exception:
                logger.exception("stopping %s failed (or took over %d s)", name, JOB_STOP_SECONDS)
        held, self._held = self._held, None
        with contextlib.suppress(Exception):
            await held.aclose()


def primary_writer(workers: WorkersConfig, db: Database) -> PrimaryWriter | None:
    """This process's part in the primary role: an event writer of several (none for
    one writer, whatever the other roles, or a process that writes no events)."""
    writers = [i.name for i in workers.with_role("event_writer")]
    instance = workers.instance
    if len(writers) < 2 or instance not in writers or not isinstance(db, AdvisoryLocks):
        return None
    return PrimaryWriter(db, db, instance, writers, PrimaryGate())
