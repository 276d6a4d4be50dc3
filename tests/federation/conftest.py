"""Fixtures for the federation tests: a real Synapse on loopback as the peer.

- ``synapse``: one ``SynapseProcess`` for the whole session, started the first time a test
  asks for it (skipped locally, failed under CI, when ``.synapse-venv`` lacks Synapse).
  ``server_name`` is ``127.0.0.1:<federation_port>``; ``client_url`` is its client API;
  ``stop()`` / ``start()`` / ``restart()`` keep its data, keys and ports; ``log()``.
- ``synapse_client``: a ``MatrixClient`` for Synapse's client API; ``await
  synapse_client.register()`` makes a fresh user (``m.login.dummy``), an ``Account`` with
  ``user_id``, ``access_token``, ``device_id``. ``await synapse.register_user(admin=True)``
  makes a server admin (shared-secret registration).
- ``pair``: a ``harness.federation.Pair``: ``peyvand`` and ``peer`` with their clients and
  a fresh user on each (``alice`` on Peyvand, ``bob`` on the peer); ``pair.unpack()``
  gives all six.
- ``fake``: a ``FakeServer`` (``harness.fake_server``) federating with ``peyvand``.

A test that stops Synapse must leave it running again (``try: ... finally:
synapse.start()`` if not ``synapse.running``), as the other tests share it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from harness.client import MatrixClient, new_session
from harness.fake_server import FakeServer
from harness.federation import Pair
from harness.required import require_installed
from harness.server import HomeserverProcess, running_homeserver
from harness.synapse import SynapseProcess, SynapseUnavailable, synapse_python


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseProcess]:
    """The session's Synapse, running."""
    python = require_installed("Synapse", synapse_python, SynapseUnavailable)
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


@pytest.fixture(scope="session")
def peyvand(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeserverProcess]:
    """The session's federating Peyvand for ``backend`` (test network, loopback peers)."""
    with running_homeserver(
        backend, request, tmp_path_factory.mktemp(f"peyvand-fed-{backend}"), federation=True
    ) as server:
        yield server


@pytest.fixture
async def peyvand_client(peyvand: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    """A JSON client for the federating Peyvand's client API."""
    if not peyvand.running:
        peyvand.start()
    async with new_session() as session:
        yield MatrixClient(session, peyvand.base_url)


@pytest.fixture(scope="session")
def peyvand_peer(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeserverProcess]:
    """A second federating Peyvand, to federate Peyvand with Peyvand."""
    with running_homeserver(
        backend, request, tmp_path_factory.mktemp(f"peyvand-peer-{backend}"), federation=True
    ) as server:
        yield server


@pytest.fixture(params=["synapse", "peyvand"])
def peer(request: pytest.FixtureRequest) -> SynapseProcess | HomeserverProcess:
    """The other server of a federation test: Synapse, or a second Peyvand."""
    server: SynapseProcess | HomeserverProcess = request.getfixturevalue(
        "synapse" if request.param == "synapse" else "peyvand_peer"
    )
    return server


@pytest.fixture
async def peer_client(peer: SynapseProcess | HomeserverProcess) -> AsyncIterator[MatrixClient]:
    """A JSON client for the peer's client API."""
    if not peer.running:  # a previous test stopped it and failed before restarting it
        peer.start()
    async with new_session() as session:
        yield MatrixClient(session, peer.base_url)


@pytest.fixture
async def pair(
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    peer: SynapseProcess | HomeserverProcess,
    peer_client: MatrixClient,
) -> Pair:
    """Both servers, their clients, and a new user registered on each."""
    alice = await peyvand_client.register()
    bob = await peer_client.register()
    return Pair(peyvand, peyvand_client, peer, peer_client, alice, bob)


@pytest.fixture
async def fake(peyvand: HomeserverProcess, tmp_path: Path) -> AsyncIterator[FakeServer]:
    """A fake homeserver whose requests go to the session's federating Peyvand."""
    async with FakeServer(tmp_path, peer=peyvand.server_name) as server:
        yield server
