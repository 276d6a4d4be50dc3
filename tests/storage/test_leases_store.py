"""Leases (``storage.leases`` and ``wiring.leased``, issue 21) on both backends: one
holder at a time, takeover after expiry or release, a stale holding cannot renew, and a
``Leased`` component runs in exactly one of two contending "processes", moves when its
holder stops or dies, and stops by itself when it cannot renew."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.postgres import PostgresCluster
from peyvand.config import WorkerInstance, WorkersConfig
from peyvand.storage.database import Database
from peyvand.storage.leases import LeaseStore, contender_key
from peyvand.storage.migrations import run_migrations
from peyvand.storage.postgres import PostgresDatabase
from peyvand.storage.sqlite import SqliteDatabase
from peyvand.wiring.leased import InstanceName, InstanceNameTaken, Leased, instance_name

PERIOD = 0.3


async def test_one_holder_until_expiry_or_release(database: Database) -> None:
    leases = LeaseStore(database)
    assert await leases.try_acquire("job", "a", "t1", now_ms=1000, expires_ms=7000)
    assert not await leases.try_acquire("job", "b", "t2", now_ms=6999, expires_ms=13000)
    assert await leases.renew("job", "t1", expires_ms=9000)
    assert not await leases.try_acquire("job", "b", "t2", now_ms=8999, expires_ms=15000)
    assert await leases.try_acquire("job", "b", "t3", now_ms=9000, expires_ms=15000)
    assert await leases.holders() == {"job": ("b", 15000)}
    assert not await leases.renew("job", "t1", expires_ms=20000)  # a's holding is gone
    await leases.release("job", "t1")  # a stale release leaves b's lease
    assert await leases.holders() == {"job": ("b", 15000)}
    # A restarted holder takes its own lease back before it expires.
    assert await leases.try_acquire("job", "b", "t4", now_ms=10000, expires_ms=16000)
    await leases.release("job", "t4")
    assert await leases.holders() == {}
    assert await leases.try_acquire("job", "a", "t5", now_ms=10000, expires_ms=16000)
    assert await leases.try_acquire("other", "b", "t6", now_ms=10000, expires_ms=16000)


class Job:
    def __init__(self) -> None:
        self.running = False
        self.starts = 0

    async def start(self) -> None:
        self.running = True
        self.starts += 1

    async def stop(self) -> None:
        self.running = False


async def _until(condition: Callable[[], bool], seconds: float) -> float:
    """Seconds until ``condition()`` holds, polled every 10 ms; fails after ``seconds``."""
    started = time.monotonic()
    for _ in range(int(seconds / 0.01)):
        if condition():
            return time.monotonic() - started
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {seconds} s")


class SlowJob(Job):
    """A job whose start takes two lease periods."""

    async def start(self) -> None:
        await asyncio.sleep(PERIOD * 2)
        await super().start()


class HangingRenewals(LeaseStore):
    """Renewals that never answer (a connection stuck, the database unreachable)."""

    async def renew(self, name: str, token: str, expires_ms: int) -> bool:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


class FailingRenewals(LeaseStore):
    async def renew(self, name: str, token: str, expires_ms: int) -> bool:
        raise ConnectionError("database unreachable")


async def test_a_leased_job_runs_once_and_moves(database: Database) -> None:
    jobs = {"a": Job(), "b": Job()}
    leased = {
        holder: Leased("retention", job, LeaseStore(database), holder, period_seconds=PERIOD)
        for holder, job in jobs.items()
    }
    for component in leased.values():
        await component.start()
    try:
        await _until(lambda: any(job.running for job in jobs.values()), 5)
        await asyncio.sleep(PERIOD * 2)  # renewals pass; still exactly one
        assert sum(job.running for job in jobs.values()) == 1
        first = "a" if jobs["a"].running else "b"
        second = "b" if first == "a" else "a"
        assert not leased[second].running

        # A clean stop releases: the other takes it at its next try.
        await leased[first].stop()
        assert not jobs[first].running
        moved = await _until(lambda: jobs[second].running, 5)
        assert moved <= PERIOD / 3 + 0.5

        # The holder dies (its loop ends without releasing): taken over after expiry.
        await leased[first].start()
        await leased[second]._task.stop()  # a process gone without a word
        moved = await _until(lambda: leased[first].running, 5)
        assert PERIOD / 2 <= moved <= PERIOD + PERIOD / 3 + 0.5
        assert jobs[first].starts == 2
    finally:
        for component in leased.values():
            await component.stop()


async def test_a_holder_that_cannot_renew_stops_before_its_lease_ends(database: Database) -> None:
    job = Job()
    leased = Leased("push", job, FailingRenewals(database), "a", period_seconds=PERIOD)
    await leased.start()
    try:
        await _until(lambda: job.running, 5)
        started = time.monotonic()
        await _until(lambda: not job.running, 5)
        assert time.monotonic() - started < PERIOD
    finally:
        await leased.stop()


async def _never_both(jobs: dict[str, Job], seconds: float) -> None:
    """Fails as soon as both jobs run at once, polled every 10 ms for ``seconds``."""
    for _ in range(int(seconds / 0.01)):
        assert not all(job.running for job in jobs.values())
        await asyncio.sleep(0.01)


async def test_a_hanging_renewal_stops_the_job_before_another_takes_it(
    database: Database,
) -> None:
    jobs = {"a": Job(), "b": Job()}
    stuck = Leased("retention", jobs["a"], HangingRenewals(database), "a", period_seconds=PERIOD)
    other = Leased("retention", jobs["b"], LeaseStore(database), "b", period_seconds=PERIOD)
    await stuck.start()
    try:
        await _until(lambda: jobs["a"].running, 5)
        started = time.monotonic()
        await other.start()
        watching = asyncio.create_task(_never_both(jobs, PERIOD * 4))
        await _until(lambda: not jobs["a"].running, PERIOD * 2)
        assert time.monotonic() - started < PERIOD
        await _until(lambda: jobs["b"].running, 5)
        await watching
    finally:
        await other.stop()
        await stuck.stop()


async def test_a_job_slow_to_start_keeps_its_lease_meanwhile(database: Database) -> None:
    jobs = {"a": SlowJob(), "b": Job()}
    slow = Leased("retention", jobs["a"], LeaseStore(database), "a", period_seconds=PERIOD)
    other = Leased("retention", jobs["b"], LeaseStore(database), "b", period_seconds=PERIOD)
    await slow.start()
    try:
        await _until(lambda: slow.running, 5)
        await other.start()
        await _until(lambda: jobs["a"].running, 5)
        await asyncio.sleep(PERIOD)
        assert jobs["a"].running and jobs["b"].starts == 0
    finally:
        await other.stop()
        await slow.stop()


class StuckJob(Job):
    """A job whose start never ends; notes that it was cancelled and stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled = False
        self.stopped = False

    async def start(self) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    async def stop(self) -> None:
        self.stopped = True


async def test_a_start_outlasting_the_lease_is_cancelled(database: Database) -> None:
    job = StuckJob()
    leased = Leased("push", job, FailingRenewals(database), "a", period_seconds=PERIOD)
    await leased.start()
    try:
        await _until(lambda: leased.running, 5)
        stopped = await _until(lambda: not leased.running, PERIOD * 2)
        assert stopped < PERIOD
        assert job.cancelled and job.stopped
    finally:
        await leased.stop()


async def test_one_live_process_per_instance_name(postgres_cluster: PostgresCluster) -> None:
    """A second process started under a name a live one holds refuses to start (their
    leases would go back and forth between them, both running the job); another name
    starts; the name is free again once its process stops. A live process whose session
    the database ends (a restart, the network) takes its name again, and a newcomer is
    refused again (a process that dies does not: tests/workers/test_kill_processes.py)."""
    dsn = postgres_cluster.create_database("names")
    first, second = await PostgresDatabase.open(dsn), await PostgresDatabase.open(dsn)
    main = InstanceName(first, "main")
    try:
        await main.start()
        with pytest.raises(InstanceNameTaken, match="'main'"):
            await InstanceName(second, "main").start()
        jobs = InstanceName(second, "jobs")
        await jobs.start()
        await jobs.stop()
        await main.stop()
        again = InstanceName(second, "main")
        await again.start()
        holders = (
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        (before,) = [row["pid"] for row in await first.fetch(holders)]
        # The database ends the session holding the name; the process lives on.
        await first.execute("SELECT pg_terminate_backend($1)", before)
        after: list[int] = []
        for _ in range(100):  # 5 s
            after = [row["pid"] for row in await first.fetch(holders)]
            if after not in ([], [before]):
                break
            await asyncio.sleep(0.05)
        assert len(after) == 1 and after != [before]
        assert again.problem() is None
        with pytest.raises(InstanceNameTaken, match="'main'"):
            await InstanceName(first, "main").start()
        await again.stop()
    finally:
        await first.close()
        await second.close()


async def test_names_are_held_on_postgres_only(
    postgres_cluster: PostgresCluster, tmp_path: Path
) -> None:
    """A process of a deployment holds its name; a single process, and SQLite (one
    process by definition), hold nothing."""
    named = WorkersConfig((WorkerInstance("main", ("background",), 8008),), instance="main")
    sqlite = await SqliteDatabase.open(str(tmp_path / "alone.db"))
    postgres = await PostgresDatabase.open(postgres_cluster.create_database("named"))
    try:
        assert instance_name(named, sqlite) is None
        assert instance_name(WorkersConfig(), postgres) is None
        assert isinstance(instance_name(named, postgres), InstanceName)
    finally:
        await sqlite.close()
        await postgres.close()


class HangingStop(Job):
    """A job whose stop never ends."""

    async def stop(self) -> None:
        await asyncio.sleep(3600)


async def test_a_stop_that_hangs_still_lets_the_lease_go(database: Database) -> None:
    leased = Leased("retention", HangingStop(), LeaseStore(database), "a", period_seconds=PERIOD)
    other = Leased("retention", Job(), LeaseStore(database), "b", period_seconds=PERIOD)
    await leased.start()
    await _until(lambda: leased.running, 5)
    started = time.monotonic()
    await asyncio.wait_for(leased.stop(), PERIOD * 3)
    assert time.monotonic() - started < PERIOD
    await other.start()
    try:
        await _until(lambda: other.running, PERIOD * 3)  # released: taken at the next try
    finally:
        await other.stop()


@dataclass
class OwnedShare:
    """An owner process and a stand-in contending for one lease the owner owns, each on
    its own database pool (its own sessions)."""

    jobs: dict[str, Job]
    owner: Leased
    stand_in: Leased
    owner_db: PostgresDatabase
    other_db: PostgresDatabase


@contextlib.asynccontextmanager
async def owned_share(cluster: PostgresCluster, name: str) -> AsyncIterator[OwnedShare]:
    dsn = cluster.create_database(name)
    owner_db, other_db = await PostgresDatabase.open(dsn), await PostgresDatabase.open(dsn)
    await run_migrations(owner_db)
    jobs = {"owner": Job(), "other": Job()}
    stand_in = Leased(
        name, jobs["other"], LeaseStore(other_db), "other", period_seconds=PERIOD,
        defer_to="owner",
    )  # fmt: skip
    owner = Leased(
        name, jobs["owner"], LeaseStore(owner_db), "owner", period_seconds=PERIOD,
        defer_to="owner",
    )  # fmt: skip
    try:
        yield OwnedShare(jobs, owner, stand_in, owner_db, other_db)
    finally:
        for component in (owner, stand_in):
            await component.stop()
        await owner_db.close()
        await other_db.close()


async def test_a_lease_deferring_to_its_process_is_stood_in_for_and_handed_back(
    postgres_cluster: PostgresCluster,
) -> None:
    """A federation sender's own share (``defer_to``): another process takes it only
    while the owner does not contend for it (stopped, killed), and hands it back once
    the owner contends again, which then takes it."""
    async with owned_share(postgres_cluster, "deferring") as share:
        jobs, owner, stand_in = share.jobs, share.owner, share.stand_in
        await owner.start()
        await _until(lambda: jobs["owner"].running, 5)
        await stand_in.start()
        await owner.stop()  # a clean stop: the stand-in takes it at its next try
        await _until(lambda: jobs["other"].running, 5)
        await owner.start()  # back, and contending
        handed = await _until(lambda: jobs["owner"].running, 5)
        assert handed <= PERIOD * 2 + 0.5
        assert not jobs["other"].running
        await asyncio.sleep(PERIOD * 2)  # renewals pass: it stays with the owner
        assert jobs["owner"].running and not jobs["other"].running
        assert (await LeaseStore(share.owner_db).holders())["deferring"][0] == "owner"
        # The owner's process dies: its session, and its contender lock, end with it.
        await owner._task.stop()
        key = contender_key("deferring", "owner") & 0xFFFFFFFFFFFFFFFF
        pid = await share.other_db.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid::bigint = $1"
            " AND objid::bigint = $2 AND objsubid = 1",
            key >> 32,
            key & 0xFFFFFFFF,
        )
        assert pid is not None  # the owner's contender lock, on its own session
        await share.other_db.execute("SELECT pg_terminate_backend($1)", pid)
        await _until(lambda: jobs["other"].running, 5)


async def test_a_stand_in_leaves_an_owner_its_first_lease_period(
    postgres_cluster: PostgresCluster,
) -> None:
    """A deployment starting: a process standing in for a share's owner does not take
    the share in its own first lease period, so an owner starting meanwhile takes it."""
    async with owned_share(postgres_cluster, "first_period") as share:
        await share.stand_in.start()
        await asyncio.sleep(PERIOD / 2)
        await share.owner.start()
        await _until(lambda: share.jobs["owner"].running, 5)
        assert share.jobs["other"].starts == 0
