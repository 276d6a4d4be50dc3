"""Servers with their own registration and rate-limit settings, on every backend.

The session's shared ``homeserver`` has open registration and no rate limits; tests of
closed registration, registration tokens and rate limiting start their own server from
``configured_homeserver(...)``, which edits the generated config before the first start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from harness.server import HomeserverProcess, start_homeserver

ConfiguredHomeserver = Callable[..., HomeserverProcess]


@pytest.fixture
def configured_homeserver(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[ConfiguredHomeserver]:
    """A factory: ``configured_homeserver(open_registration=..., tokens=..., login_burst=...,
    options=...)`` starts a server of the test's own; a ``login_burst`` turns rate limits
    on; ``options`` sets any other config keys (``HomeserverProcess.configure``)."""
    started: list[HomeserverProcess] = []

    def start(
        *,
        open_registration: bool,
        tokens: tuple[str, ...] = (),
        login_burst: int | None = None,
        options: Mapping[str, str] | None = None,
    ) -> HomeserverProcess:
        settings = {
            "registration.open": "true" if open_registration else "false",
            "registration.tokens": "[" + ", ".join(f'"{t}"' for t in tokens) + "]",
        }
        if login_burst is not None:
            settings |= {
                "rate_limits.enabled": "true",
                "rate_limits.login_burst": str(login_burst),
                "rate_limits.login_per_second": "0.01",
            }
        server = start_homeserver(
            backend,
            request,
            tmp_path / f"homeserver-{len(started)}",
            options=settings | dict(options or {}),
        )
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
