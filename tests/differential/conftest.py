"""Fixtures of the differential tests: a real Synapse as a plain homeserver for clients.

- ``synapse``: one ``SynapseProcess`` for the whole session (skipped locally, failed
  under CI, when ``.synapse-venv`` lacks Synapse); clients reach it at ``client_url``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.required import require_installed
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
