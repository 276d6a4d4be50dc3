"""The primary event writer role (``wiring.primary``) between two writers on a real
PostgreSQL: the second takes it while the first is not ready, the first takes it back
once ready (the second waiting for the requests it admitted), the second takes it
again when the first stops, and a handback whose first writer stops before its requests
finished leaves the second the primary. (kill -9: ``test_several_writers_deployment``.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from harness.postgres import PostgresCluster
from peyvand.api.primary_gate import PrimaryGate
from peyvand.errors import MatrixError
from peyvand.storage.migrations import run_migrations
from peyvand.storage.postgres import PostgresDatabase
from peyvand.wiring import primary
from peyvand.wiring.lifecycle import Hooks
from peyvand.wiring.primary import PrimaryWriter

WRITERS = ("first", "second")
WAIT_SECONDS = 10.0


class Writer:
    """One writer's part: its database, gate and job."""

    def __init__(self, db: PostgresDatabase, name: str) -> None:
        self.db = db
        self.gate = PrimaryGate()
        self.role = PrimaryWriter(db, db, name, WRITERS, self.gate)
        self.job_running = False
        self.resumed = 0

        async def resume() -> None:
            self.resumed += 1

        def started() -> None:
            self.job_running = True

        def stopped() -> None:
            self.job_running = False

        self.role.on_taken(resume)
        self.role.add_job("job", Hooks(start=started, stop=stopped))


@pytest.fixture
async def dsn(postgres_cluster: PostgresCluster) -> str:
    dsn = postgres_cluster.create_database("primary_writer")
    db = await PostgresDatabase.open(dsn)
    await run_migrations(db)
    await db.close()
    return dsn


@pytest.fixture
async def writers(dsn: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[Writer]]:
    monkeypatch.setattr(primary, "CHECK_SECONDS", 0.1)
    monkeypatch.setattr(primary, "START_SECONDS", 3.0)
    monkeypatch.setattr(primary, "DRAIN_SECONDS", 0.5)
    made = [Writer(await PostgresDatabase.open(dsn), name) for name in WRITERS]
    yield made
    for writer in made:
        with contextlib.suppress(Exception):
            await writer.role.stop()
        await writer.db.close()


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(int(WAIT_SECONDS / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {WAIT_SECONDS} s: {what}")


def _admits(writer: Writer) -> bool:
    try:
        with writer.gate.admitted():
            return True
    except MatrixError as refused:
        assert refused.status == 503
        return False


async def test_the_role_moves_to_the_second_writer_and_back(writers: list[Writer]) -> None:
    first, second = writers
    await second.role.start()  # the first is not ready: the second is the primary
    assert _admits(second) and second.job_running and second.resumed == 1
    assert not _admits(first)

    # A request the second admitted runs while the first gets ready: the first waits.
    request = second.gate.admitted()
    request.__enter__()
    starting = asyncio.create_task(first.role.start())
    await _until(lambda: not second.gate.held, "the second stops admitting")
    assert not first.role.held and second.job_running
    request.__exit__(None, None, None)
    await starting
    assert _admits(first) and first.job_running and first.resumed == 1
    assert not _admits(second) and not second.job_running

    # The first stops (its locks let go, as when it dies): the second takes the role again.
    await first.role.stop()
    await _until(lambda: second.role.held and second.gate.held, "the second is primary")
    assert second.job_running and second.resumed == 2


async def test_a_handback_whose_first_writer_dies_leaves_the_second_primary(
    writers: list[Writer],
) -> None:
    first, second = writers
    await second.role.start()
    request = second.gate.admitted()
    request.__enter__()  # outlasts the drain
    starting = asyncio.create_task(first.role.start())
    await _until(lambda: not second.gate.held, "the second stops admitting")
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
    await first.role.stop()  # the first stops before the handback ends
    await _until(lambda: second.gate.held, "the second admits again")
    assert second.role.held and second.job_running
    request.__exit__(None, None, None)
