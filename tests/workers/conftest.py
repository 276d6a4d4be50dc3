"""Fixtures of the deployment tests: ``deployed`` is a session's deployment on the test
PostgreSQL cluster (an event writer with every other role but client reads, and a client
reader) behind a real nginx; ``homeserver`` (and ``push_homeserver``) here is its nginx's
address, ``private_homeserver`` that of a deployment of the test's own, so tests written
for one server (the client-library, push and retention tests) run unchanged against a
deployment."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.deployment import Deployment
from harness.nginx import Nginx
from harness.server import HomeserverProcess

# Pushes go to Sygnal on 127.0.0.1 (tests/push).
PUSH_OPTIONS = {"push.gateway_allowed_networks": '["127.0.0.1/32"]'}
WRITER_ROLES = ["event_writer", "federation_inbound", "federation_sender", "media", "background"]


@contextlib.contextmanager
def _deployment(
    request: pytest.FixtureRequest, data_dir: Path
) -> Iterator[tuple[Nginx, Deployment]]:
    deployment = Deployment(
        request,
        data_dir,
        {"writer": WRITER_ROLES, "reader": ["client_reader"]},
        options=PUSH_OPTIONS,
    )
    nginx = Nginx(deployment["writer"].config_path, data_dir / "nginx")
    try:
        for process in deployment.processes.values():
            process.start()
        nginx.start()
        yield nginx, deployment
    finally:
        nginx.stop()
        deployment.stop()


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
    with _deployment(request, tmp_path_factory.mktemp("deployment")) as deployed:
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
    with _deployment(request, tmp_path) as deployed:
        yield _front(deployed)


@pytest.fixture(scope="session")
def push_homeserver(homeserver: HomeserverProcess) -> HomeserverProcess:
    """The push tests' server: the same deployment (it lets pushes reach loopback)."""
    return homeserver
