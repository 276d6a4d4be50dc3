"""Fixtures of the deployment tests: ``deployed`` is a session's deployment on the test
PostgreSQL cluster (two event writers sharing the rooms, a client reader, and a process
for federation, media and background jobs) behind a real nginx; ``homeserver``
(and ``push_homeserver``) here is its nginx's address, ``private_homeserver`` that of a
deployment of the test's own, so tests written for one server (the client-library,
push and retention tests) run unchanged against a deployment; ``session`` is an HTTP
session for a test's own clients."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from harness.deployment import Deployment, behind_nginx
from harness.nginx import Nginx
from harness.server import HomeserverProcess

# Pushes go to Sygnal on 127.0.0.1 (tests/push).
PUSH_OPTIONS = {"push.gateway_allowed_networks": '["127.0.0.1/32"]'}
# Issue 21's acceptance layout: two event writers sharing the rooms, a client reader,
# and one process for federation, media and background jobs; it federates (on a test
# network: nginx terminates federation TLS), and the tests written for one server run
# against it unchanged.
ROLES = {
    "writer": ["event_writer"],
    "writer2": ["event_writer"],
    "reader": ["client_reader"],
    "fed": ["federation_inbound", "federation_sender", "media", "background"],
}


def _front(deployed: tuple[Nginx, Deployment]) -> HomeserverProcess:
    """The deployment as clients see it: nginx's address (the writer's config and data)."""
    nginx, deployment = deployed
    front = copy.copy(deployment["writer"])
    front.base_url = nginx.base_url
    return front


@pytest.fixture(scope="session")
def deployed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Nginx, Deployment]]:
    data_dir = tmp_path_factory.mktemp("deployment")
    with behind_nginx(request, data_dir, ROLES, options=PUSH_OPTIONS, federation=True) as deployed:
        yield deployed


@pytest.fixture(scope="session")
def homeserver(deployed: tuple[Nginx, Deployment]) -> HomeserverProcess:
    """The session's deployment as clients see it."""
    return _front(deployed)


@pytest.fixture
def private_homeserver(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[HomeserverProcess]:
    """A deployment of the test's own (the retention tests count what a purge removed
    from the whole database)."""
    with behind_nginx(request, tmp_path, ROLES, options=PUSH_OPTIONS, federation=True) as deployed:
        yield _front(deployed)


@pytest.fixture(scope="session")
def push_homeserver(homeserver: HomeserverProcess) -> HomeserverProcess:
    """The push tests' server: the same deployment (it lets pushes reach loopback)."""
    return homeserver


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session for the test's clients."""
    async with aiohttp.ClientSession() as opened:
        yield opened
