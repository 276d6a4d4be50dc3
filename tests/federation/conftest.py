"""Fixtures for the federation tests: a real Synapse on loopback as the peer.

- ``synapse``: one ``SynapseProcess`` for the whole session, started the first time a test
  asks for it (skipped locally, failed under CI, when ``.synapse-venv`` lacks Synapse).
  ``server_name`` is ``127.0.0.1:<federation_port>``; ``client_url`` is its client API;
  ``stop()`` / ``start()`` / ``restart()`` keep its data, keys and ports; ``log()``.
- ``synapse_client``: a ``MatrixClient`` for Synapse's client API; ``await
  synapse_client.register()`` makes a fresh user (``m.login.dummy``), an ``Account`` with
  ``user_id``, ``access_token``, ``device_id``. ``await synapse.register_user(admin=True)``
  makes a server admin (shared-secret registration).

A test that stops Synapse must leave it running again (``try: ... finally:
synapse.start()`` if not ``synapse.running``), as the other tests share it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from harness.client import MatrixClient, new_session
from harness.synapse import SynapseProcess, SynapseUnavailable, synapse_python


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseProcess]:
    """The session's Synapse, running."""
    try:
        python = synapse_python()
    except SynapseUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Synapse is required under CI: {exc}")
        pytest.skip(str(exc))
    server = SynapseProcess(tmp_path_factory.mktemp("synapse"), python)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
async def synapse_client(synapse: SynapseProcess) -> AsyncIterator[MatrixClient]:
    """A JSON client for Synapse's client API."""
    if not synapse.running:  # a previous test stopped it and failed before restarting it
        synapse.start()
    async with new_session() as session:
        yield MatrixClient(session, synapse.client_url)
