"""Fixtures of the differential tests: a real Synapse as a plain homeserver for clients.

- ``synapse``: one ``SynapseProcess`` for the whole session (skipped locally, failed
  under CI, when ``.synapse-venv`` lacks Synapse); clients reach it at ``client_url``.
- ``synapse_outcome``: the scenario of ``scenario.py`` run once on it.
- ``peyvand_outcome``: the scenario run once on the session's Peyvand of ``backend``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from differential.scenario import Outcome, run_scenario
from harness.client import MatrixClient, new_session
from harness.required import require_installed
from harness.server import HomeserverProcess
from harness.synapse import SynapseProcess, SynapseUnavailable, synapse_python


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseProcess]:
    """The session's Synapse, running."""
    python = require_installed("Synapse", synapse_python, SynapseUnavailable)
    server = SynapseProcess(tmp_path_factory.mktemp("synapse-differential"), python)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def synapse_outcome(synapse: SynapseProcess) -> Outcome:
    async with new_session() as session:
        return await run_scenario(MatrixClient(session, synapse.client_url))


@pytest.fixture(scope="session")
async def peyvand_outcome(homeserver: HomeserverProcess) -> Outcome:
    async with new_session() as session:
        return await run_scenario(MatrixClient(session, homeserver.base_url))
