"""Push through a real gateway: Peyvand -> Sygnal -> a browser push service on loopback.

- ``webpush_receiver``: the session's ``WebPushReceiver`` (tests take a subscription each).
- ``sygnal``: the session's ``SygnalProcess``, its webpush app allowed to post to the
  receiver; skipped when Sygnal is not installed, failed under CI. A test that stops it
  starts it again before it ends.
- ``gateway_tap``: a recording hop in front of ``sygnal`` (for ``prio`` and ``tweaks``,
  which webpush does not carry).
- ``push_homeserver``: the session's server for ``backend``, allowed to reach push
  gateways on 127.0.0.1 (``push.gateway_allowed_networks``); ``push_client`` talks to it.
- ``private_push_homeserver``: the same settings, a server of the test's own (to kill).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from harness.client import MatrixClient, new_session
from harness.gateway_tap import NotifyTap
from harness.required import require_installed
from harness.server import HomeserverProcess, running_homeserver
from harness.sygnal import SygnalProcess, SygnalUnavailable, sygnal_python
from harness.webpush import WebPushReceiver

# Gateways on loopback are refused unless allowed: Sygnal listens on 127.0.0.1.
PUSH_OPTIONS = {"push.gateway_allowed_networks": '["127.0.0.1/32"]'}


@pytest.fixture(scope="session")
async def webpush_receiver() -> AsyncIterator[WebPushReceiver]:
    receiver = WebPushReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@pytest.fixture(scope="session")
async def sygnal(
    webpush_receiver: WebPushReceiver, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SygnalProcess]:
    python = require_installed("Sygnal", sygnal_python, SygnalUnavailable)
    gateway = SygnalProcess(tmp_path_factory.mktemp("sygnal"), webpush_receiver.netloc, python)
    await gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="session")
async def gateway_tap(sygnal: SygnalProcess) -> AsyncIterator[NotifyTap]:
    tap = NotifyTap(sygnal.notify_url)
    await tap.start()
    try:
        yield tap
    finally:
        await tap.stop()


@pytest.fixture(scope="session")
def push_homeserver(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeserverProcess]:
    with running_homeserver(
        backend, request, tmp_path_factory.mktemp(f"push-{backend}"), options=PUSH_OPTIONS
    ) as server:
        yield server


@pytest.fixture
def private_push_homeserver(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[HomeserverProcess]:
    with running_homeserver(
        backend, request, tmp_path / "homeserver", options=PUSH_OPTIONS
    ) as server:
        yield server


@pytest.fixture
async def push_client(push_homeserver: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, push_homeserver.base_url)
