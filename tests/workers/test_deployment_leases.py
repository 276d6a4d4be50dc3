"""Background jobs in a deployment (issue 21, "Roles"): two `peyvand serve --worker`
processes with the `background` role on one PostgreSQL database, one of them the event
writer; each job's lease has exactly one holder; kill -9 of the holder moves every job to
the other within 10 s, but push and appservice delivery, which the writer's commits
feed, and the policy-list follower, whose joins the writer stores, stay with the event
writer; restarted, the process rejoins (serving again, taking
back its writer's jobs, the others only once they are free)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from harness.deployment import Deployment

ALL_BUT_BACKGROUND = [
    "client_reader",
    "event_writer",
    "federation_inbound",
    "federation_sender",
    "media",
]
# The jobs of a default config (no e-mail): app.py's ``add_job`` calls.
WRITER_JOBS = {"appservice transactions", "pushers", "policy lists"}
JOBS = {"guest removal", "search backfill", "retention", "disappearing messages"}


@pytest.fixture
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    processes = Deployment(
        request, tmp_path, {"main": [*ALL_BUT_BACKGROUND, "background"], "jobs": ["background"]}
    )
    try:
        yield processes
    finally:
        processes.stop()


async def _holders(url: str) -> dict[str, str]:
    """Each unexpired lease's holder."""
    connection = await asyncpg.connect(url)
    try:
        now_ms = int(time.time() * 1000)
        rows = await connection.fetch(
            "SELECT name, holder FROM leases WHERE expires_ts > $1", now_ms
        )
    finally:
        await connection.close()
    return {row["name"]: row["holder"] for row in rows}


async def _until_held(url: str, expected: dict[str, str], seconds: float) -> float:
    """Seconds until exactly the ``expected`` leases are held, each by its holder."""
    started = time.monotonic()
    for _ in range(int(seconds / 0.2)):
        if await _holders(url) == expected:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise AssertionError(f"not {expected} within {seconds} s: {await _holders(url)}")


def _held(jobs: set[str], holder: str) -> dict[str, str]:
    return dict.fromkeys(jobs, holder)


async def test_jobs_run_once_and_move_when_their_process_dies(deployment: Deployment) -> None:
    url = deployment.database_url
    assert url is not None
    deployment["main"].start()
    await _until_held(url, _held(JOBS | WRITER_JOBS, "main"), 10)
    deployment["jobs"].start()
    await asyncio.sleep(3)  # renewals go on; the newcomer takes nothing
    assert await _holders(url) == _held(JOBS | WRITER_JOBS, "main")

    deployment["main"].kill()
    moved = await _until_held(url, _held(JOBS, "jobs"), 15)
    assert moved <= 10, f"jobs moved {moved:.1f} s after kill -9"

    deployment["main"].start()  # rejoins: its writer's jobs back, the others stay
    await _until_held(url, _held(JOBS, "jobs") | _held(WRITER_JOBS, "main"), 10)
    deployment["jobs"].stop()  # a clean stop releases: taken back at the next try
    await _until_held(url, _held(JOBS | WRITER_JOBS, "main"), 5)
