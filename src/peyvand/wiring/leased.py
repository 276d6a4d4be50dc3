"""A component run by one process of a deployment at a time (issue 21, "Roles"): the
process that holds the component's lease runs it; the others wait to take it over.

The holder renews its lease every third of the lease period, from the moment it takes
it (while the component starts, too), and stops the component as soon as the database
says the lease is someone else's, or when it could not renew with a third of the period
left (the database unreachable, or a renewal that hangs: each is bounded by that time,
measured on the monotonic clock): it never runs past its lease. A process that dies
stops renewing, and another takes the lease once it has expired: within one period and
one retry interval (6 s + 2 s by default). A clean stop releases the lease, so another
process takes over at its next try; stopping the component is bounded by a third of the
period (one that hangs is logged and left), so a process always stops and lets go.

Each job is expected to be safe to run again from its stored position (they all resume
from the database at start), since the handover can repeat the last unfinished pass.

A lease may belong to one process (``defer_to``: a federation sender's own share of the
destinations, ``wiring.sender_shards``), which holds a lock while it contends for it
(``LeaseStore.contending``, from the start of its ``Leased`` to its stop, taken again at
the next try if its connection drops). The others contend for the lease only while that
lock is free (the process stopped or was killed; a machine gone, once the database ends
its session, which takes the system's TCP keepalive time), and not in their first lease
period (a deployment starting: the owner starts meanwhile); a holder hands the lease
back at its next renewal once the owner contends again, which takes it at its next try.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Protocol

from peyvand.background import BackgroundTask
from peyvand.config import WorkersConfig
from peyvand.storage.database import AdvisoryLocks, Database
from peyvand.storage.leases import LeaseStore, instance_lock_key
from peyvand.wiring.lifecycle import Component, Hooks, Lifecycle, run_step
from peyvand.wiring.primary import PrimaryWriter

logger = logging.getLogger(__name__)

LEASE_PERIOD_SECONDS = 6.0
# Between two tries to take the instance name again after its lock was lost.
RETAKE_SECONDS = 1.0
# Tries to take the instance name at start, START_RETRY_SECONDS apart.
START_TRIES = 10
START_RETRY_SECONDS = 0.1


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class Leased:
    """Runs ``component`` while this process (``holder``) holds lease ``name``."""

    def __init__(
        self,
        name: str,
        component: Component | Hooks,
        leases: LeaseStore,
        holder: str,
        *,
        period_seconds: float = LEASE_PERIOD_SECONDS,
        clock: Callable[[], float] = time.time,
        defer_to: str | None = None,
    ) -> None:
        """``defer_to``: the process the lease belongs to while it runs (see the module
        docstring); None: whoever takes it first."""
        self.name = name
        self._component = component
        self._leases = leases
        self._holder = holder
        self._period = period_seconds
        self._clock = clock
        self._defer_to = defer_to if defer_to != holder else None
        # The owner's lock telling the others it contends (``defer_to`` is this process).
        self._owns = defer_to is not None and defer_to == holder
        self._claim: AsyncExitStack | None = None
        self._claim_lost = False
        self._token: str | None = None
        self._running = False
        self._task = BackgroundTask(f"lease {name}", self._contend)

    @property
    def running(self) -> bool:
        """Whether this process runs the component now."""
        return self._running

    async def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
        await self._give_up()
        await self._unclaim()

    async def _contend(self) -> None:
        if self._defer_to is not None:
            # A deployment starting: the owner has a lease period to start and contend
            # before this process stands in for it.
            await asyncio.sleep(self._period)
        while True:
            if self._owns and (self._claim is None or self._claim_lost):
                await self._take_claim()
            if await self._owner_contends(self._period / 3, unknown=True):
                await asyncio.sleep(self._period / 3)
                continue
            token = secrets.token_hex(16)
            sent = time.monotonic()
            now = self._clock()
            try:
                async with asyncio.timeout(self._period / 3):
                    taken = await self._leases.try_acquire(
                        self.name, self._holder, token, _ms(now), _ms(now + self._period)
                    )
            except Exception:
                logger.exception("lease %s: taking it failed", self.name)
                taken = False
            if taken:
                self._token = token
                await self._hold(ends=sent + self._period)
            await asyncio.sleep(self._period / 3)

    async def _hold(self, ends: float) -> None:
        """Run the component and keep the lease until it is lost. ``ends`` is when the
        lease ends on this process's monotonic clock (counted from before the request
        that took it). The component starts while the lease is renewed: a start slower
        than the lease period is cancelled if the lease is lost meanwhile."""
        logger.info("lease %s taken by %s", self.name, self._holder)
        self._running = True
        keeping = asyncio.create_task(self._keep(ends))
        starting = asyncio.create_task(run_step(self._component.start))
        try:
            await asyncio.wait((keeping, starting), return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                logger.warning("lease %s lost by %s while starting", self.name, self._holder)
            elif starting.exception() is not None:
                logger.error(
                    "lease %s: starting the component failed",
                    self.name,
                    exc_info=starting.exception(),
                )
            else:
                await keeping
        finally:
            for task in (keeping, starting):
                task.cancel()
            await asyncio.gather(keeping, starting, return_exceptions=True)
        await self._give_up()

    async def _keep(self, ends: float) -> None:
        """Renew the lease every third of its period; return once it is lost, or once it
        could not be renewed while a third of the period was left before ``ends`` (the
        time kept to stop the component). Each renewal is bounded by that time: one
        that hangs (the database unreachable, a connection stuck) never lets the
        component run past its lease while another process takes it."""
        token = self._token
        while token is not None:
            latest = ends - self._period / 3
            await asyncio.sleep(max(0.0, min(self._period / 3, latest - time.monotonic())))
            sent = time.monotonic()
            if sent >= latest:
                logger.warning("lease %s: not renewed in time by %s", self.name, self._holder)
                return
            now = self._clock()
            try:
                async with asyncio.timeout(latest - sent):
                    renewed = await self._leases.renew(self.name, token, _ms(now + self._period))
            except TimeoutError:
                logger.warning("lease %s: renewing it took too long", self.name)
                return
            except Exception:
                logger.exception("lease %s: renewing it failed", self.name)
                continue
            if not renewed:
                logger.warning("lease %s lost by %s", self.name, self._holder)
                return
            ends = sent + self._period
            # Bounded by the next renewal's time: a slow answer never eats into it.
            left = sent + self._period / 3 - time.monotonic()
            if left > 0 and await self._owner_contends(left, unknown=False):
                logger.info("lease %s handed back to %s", self.name, self._defer_to)
                return

    async def _owner_contends(self, within: float, *, unknown: bool) -> bool:
        """Whether the process the lease belongs to (``defer_to``, not this one)
        contends for it; ``unknown`` when the database did not tell within ``within``
        seconds (a holder's: before its next renewal is due)."""
        if self._defer_to is None:
            return False
        try:
            async with asyncio.timeout(within):
                return await self._leases.contends(self.name, self._defer_to)
        except Exception as exc:
            logger.debug(
                "lease %s: whether %s contends is unknown: %r", self.name, self._defer_to, exc
            )
            return unknown

    async def _take_claim(self) -> None:
        """The owner: hold the lock telling the others it contends (a lost one dropped
        first); tried again at the next try when not taken."""
        await self._unclaim()
        claim = AsyncExitStack()
        try:
            async with asyncio.timeout(self._period / 3):
                taken = await claim.enter_async_context(
                    self._leases.contending(self.name, self._holder, self._on_claim_lost)
                )
        except Exception:
            logger.exception("lease %s: telling that %s contends failed", self.name, self._holder)
            taken = False
        if taken:
            self._claim, self._claim_lost = claim, False
        else:
            with contextlib.suppress(Exception):
                await claim.aclose()

    def _on_claim_lost(self) -> None:
        logger.warning("lease %s: %s's contender lock was lost", self.name, self._holder)
        self._claim_lost = True

    async def _unclaim(self) -> None:
        claim, self._claim = self._claim, None
        if claim is not None:
            with contextlib.suppress(Exception):
                await claim.aclose()

    async def _give_up(self) -> None:
        """Stop the component if it runs and release the lease if this process holds it.
        Cancelled meanwhile (``stop`` while a handback or a loss is given up), what is
        left is done by the next call (``stop``'s own)."""
        if self._running:
            try:
                async with asyncio.timeout(self._period / 3):
                    await run_step(self._component.stop)
            except TimeoutError:
                logger.error("lease %s: stopping the component did not end in time", self.name)
            except Exception:
                logger.exception("lease %s: stopping the component failed", self.name)
            self._running = False
        if self._token is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._period / 3):
                    await self._leases.release(self.name, self._token)
            self._token = None


class InstanceNameTaken(RuntimeError):
    """Another live process of the deployment runs under this process's instance name."""


class InstanceName:
    """Holds the process's instance name (``--worker``) for as long as it runs: a second
    process started under the same name refuses to start. Leases are handed back to a
    holder of the same name at once (a restarted process), so two live processes of
    one name would take each other's leases and both run a job.

    Held as a PostgreSQL session-level advisory lock on the name's hash, on a pooled
    connection kept for the purpose: the database lets it go when the process dies. When
    that connection closes under a live process (PostgreSQL restarted, the network), the
    lock is gone with it: the process logs it, is unhealthy (``problem``, /health) and
    tries to take the name again every ``RETAKE_SECONDS``; while another process holds it
    (two processes of one name, for the operator to stop one) it stays unhealthy and
    keeps trying."""

    def __init__(self, db: AdvisoryLocks, instance: str) -> None:
        self._db = db
        self._instance = instance
        self._held: AsyncExitStack | None = None
        # Why the name is not held now (None: held, or not started).
        self._lost: str | None = None
        self._retake: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Retried briefly: another event writer standing in for this one holds the lock
        # for a moment (``services.timeline.absent_writers``).
        for _ in range(START_TRIES - 1):
            if await self._take():
                return
            await asyncio.sleep(START_RETRY_SECONDS)
        if not await self._take():
            raise InstanceNameTaken(
                f"another live process already runs as worker {self._instance!r} on this "
                "database: each process of a deployment needs its own --worker name "
                "(stop the other one first to restart it)"
            )

    async def stop(self) -> None:
        retake, self._retake = self._retake, None
        if retake is not None:
            retake.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retake
        held, self._held = self._held, None
        if held is not None:
            with contextlib.suppress(Exception):
                await held.aclose()

    def problem(self) -> str | None:
        """A ``Health`` check: why this process does not hold its instance name."""
        return self._lost

    async def _take(self) -> bool:
        held = AsyncExitStack()
        lock = self._db.advisory_lock(
            instance_lock_key(self._instance), wait=False, on_lost=self._on_lost
        )
        if not await held.enter_async_context(lock):
            await held.aclose()
            return False
        self._held = held
        return True

    def _on_lost(self) -> None:
        self._lost = f"the lock on instance name {self._instance!r} was lost"
        logger.error("%s (its database connection closed); taking it again", self._lost)
        if self._retake is None or self._retake.done():
            self._retake = asyncio.create_task(self._take_again(), name="instance name")

    async def _take_again(self) -> None:
        stale, self._held = self._held, None
        if stale is not None:
            with contextlib.suppress(Exception):
                await stale.aclose()
        taken_by_another = False
        while True:
            try:
                if await self._take():
                    self._lost = None
                    logger.info("instance name %r held again", self._instance)
                    return
                # Held elsewhere: another process of this name, or an event writer
                # standing in for this one for a moment (``absent_writers``): tried on.
                if not taken_by_another:
                    taken_by_another = True
                    self._lost = f"another live process holds instance name {self._instance!r}"
                    logger.error("%s: two processes run under one name? trying on", self._lost)
            except Exception as exc:
                logger.warning("taking instance name %r again failed: %r", self._instance, exc)
            await asyncio.sleep(RETAKE_SECONDS)


def instance_name(workers: WorkersConfig, db: Database) -> InstanceName | None:
    """The component holding this process's instance name in a deployment (none for a
    single process: SQLite, one process, nothing to share)."""
    if not workers.enabled or workers.instance is None or not isinstance(db, AdvisoryLocks):
        return None
    return InstanceName(db, workers.instance)


class AddJob(Protocol):
    def __call__(
        self, lifecycle: Lifecycle, name: str, job: Component | Hooks, *, on_writer: bool = False
    ) -> None: ...


def background_jobs(
    workers: WorkersConfig, db: Database, primary: PrimaryWriter | None = None
) -> AddJob:
    """How the composition root adds a background job to the process's lifecycle: as it
    is when the process is alone; in a deployment, leased among the processes with the
    ``background`` role, and not at all in the others. A job ``on_writer`` (push and
    appservice delivery, the policy lists: fed by the event writer's commits as they
    happen, remote invites and receipts included, or consulted by its checks) runs on the
    event writer instead, which takes every write but a room's sends; with several, on
    the one that is ``primary`` now (``wiring.primary``)."""
    holder = workers.instance
    leases = LeaseStore(db)
    writers = workers.with_role("event_writer")
    first_writer = writers[0].name if writers else None

    def add(
        lifecycle: Lifecycle, name: str, job: Component | Hooks, *, on_writer: bool = False
    ) -> None:
        if not workers.enabled:
            lifecycle.add(name, job)
        elif holder is None:
            return
        elif on_writer and primary is not None:
            primary.add_job(name, job)
        elif on_writer:
            if holder == first_writer:
                lifecycle.add(name, Leased(name, job, leases, holder))
        elif workers.has_role("background"):
            lifecycle.add(name, Leased(name, job, leases, holder))

    return add
