"""Fixtures of the deployment tests: ``deployed`` is a session's deployment on the test
PostgreSQL cluster (an event writer with every other role but client reads, and a client
reader) behind a real nginx; ``homeserver`` (and ``push_homeserver``,
``private_homeserver``) here is nginx's address, so tests written for one server (the
client-library, push and retention tests) run unchanged against the deployment."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest

from harness.deployment import Deployment
from harness.nginx import Nginx
from harness.server import HomeserverProcess

# Pushes go to Sygnal on 127.0.0.1 (tests/push).
PUSH_OPTIONS = {"push.gateway_allowed_networks": '["127.0.0.1/32"]'}
WRITER_ROLES = ["event_writer", "federation_inbound", "federation_sender", "media", "background"]


@pytest.fixture(scope="session")
def deployed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Nginx, Deployment]]:
    data_dir = tmp_path_factory.mktemp("deployment")
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


@pytest.fixture(scope="session")
def homeserver(deployed: tuple[Nginx, Deployment]) -> HomeserverProcess:
    """The deployment as clients see it: nginx's address (the writer's config and data)."""
    nginx, deployment = deployed
    front = copy.copy(deployment["writer"])
    front.base_url = nginx.base_url
    return front


@pytest.fixture
def private_homeserver(homeserver: HomeserverProcess) -> HomeserverProcess:
    """Tests for a server of their own (the retention tests) get the session's
    deployment: those run here neither restart nor break it."""
    return homeserver


@pytest.fixture(scope="session")
def push_homeserver(homeserver: HomeserverProcess) -> HomeserverProcess:
    """The push tests' server: the same deployment (it lets pushes reach loopback)."""
    return homeserver
