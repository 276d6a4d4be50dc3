"""One live process per instance name in a deployment (issue 21, "Roles"): a second
`peyvand serve --worker NAME` for a name a running process has (another host's copy of
the config, listening elsewhere) refuses to start with a clear error, before taking any
lease; the first keeps its jobs. Two of one name took each other's leases (a holder
takes its own name's lease back at once) and both ran the jobs. A process whose lock on
its name is lost with its connection takes it again."""

from __future__ import annotations

import asyncio
import copy
import re
import urllib.request
from pathlib import Path

import pytest

from harness.database import query
from harness.deployment import Deployment
from harness.ports import free_port
from harness.server import HomeserverError
from peyvand.storage.leases import instance_lock_key
from workers.test_deployment_leases import ALL_BUT_BACKGROUND

WAIT_SECONDS = 15.0


def test_a_second_process_of_one_name_refuses_to_start(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    roles = {"main": [*ALL_BUT_BACKGROUND, "background"], "jobs": ["background"]}
    deployment = Deployment(request, tmp_path, roles)
    jobs = deployment["jobs"]
    twin = copy.copy(jobs)
    # The same file on another host: the "jobs" instance listens on another port there.
    twin.config_path = tmp_path / "twin.toml"
    twin.port = free_port()
    twin.base_url = f"http://127.0.0.1:{twin.port}"
    twin.log_path = tmp_path / "server-twin.log"
    instance = re.compile(rf'(name = "jobs", roles = \[[^]]*\], port = ){jobs.port}')
    text = jobs.config_path.read_text(encoding="utf-8")
    assert instance.search(text)
    twin.config_path.write_text(instance.sub(rf"\g<1>{twin.port}", text), encoding="utf-8")
    try:
        deployment["main"].start()
        jobs.start()
        with pytest.raises(HomeserverError, match="another live process already runs as worker"):
            twin.start()
        assert jobs.running
    finally:
        if twin.running:
            twin.stop()
        deployment.stop()


async def test_a_lost_instance_lock_is_taken_again(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The connection holding a process's instance name is closed under it (as when
    PostgreSQL restarts): the process logs it and holds the name again within seconds,
    its /health answering 200 again (503 meanwhile, were it asked)."""
    roles = {"main": [*ALL_BUT_BACKGROUND, "background"], "jobs": ["background"]}
    deployment = Deployment(request, tmp_path, roles)
    jobs = deployment["jobs"]
    key = instance_lock_key("jobs")
    where = (
        "locktype = 'advisory' AND objsubid = 1 AND granted"
        " AND classid::bigint = $1 AND objid::bigint = $2"
    )
    parts = ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)
    try:
        deployment["main"].start()
        jobs.start()
        (holder,) = await query(jobs, f"SELECT pid FROM pg_locks WHERE {where}", *parts)
        await query(jobs, "SELECT pg_terminate_backend($1)", holder[0])
        again: list[tuple[object, ...]] = []
        async with asyncio.timeout(WAIT_SECONDS):
            while not again or again[0][0] == holder[0]:
                await asyncio.sleep(0.1)
                again = await query(jobs, f"SELECT pid FROM pg_locks WHERE {where}", *parts)
            status = await asyncio.to_thread(_health, jobs.base_url)
    finally:
        deployment.stop()
    assert status == 200
    log = jobs.log()
    assert "the lock on instance name 'jobs' was lost" in log
    assert "instance name 'jobs' held again" in log


def _health(base_url: str) -> int:
    with urllib.request.urlopen(f"{base_url}/health", timeout=5) as response:
        return int(response.status)
