"""One live process per instance name in a deployment (issue 21, "Roles"): a second
`peyvand serve --worker NAME` for a name a running process has (another host's copy of
the config, listening elsewhere) refuses to start with a clear error, before taking any
lease; the first keeps its jobs. Two of one name took each other's leases (a holder
takes its own name's lease back at once) and both ran the jobs."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from harness.deployment import Deployment
from harness.ports import free_port
from harness.server import HomeserverError
from workers.test_deployment_leases import ALL_BUT_BACKGROUND


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
