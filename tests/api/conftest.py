"""Servers with their own registration and rate-limit settings, on every backend.

The session's shared ``homeserver`` has open registration and no rate limits; tests of
closed registration, registration tokens and rate limiting start their own server from
``configured_homeserver(...)``, which edits the generated config before the first start.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.postgres import PostgresCluster
from harness.server import HomeserverProcess

ConfiguredHomeserver = Callable[..., HomeserverProcess]


def _set_option(text: str, key: str, value: str, section: str | None = None) -> str:
    """Set the one ``key = ...`` line of the generated config (in ``[section]`` if given)."""
    start, end = 0, len(text)
    if section is not None:
        start = text.index(f"\n[{section}]\n")
        following = text.find("\n[", start + 1)
        end = following if following != -1 else len(text)
    part, count = re.subn(rf"^{key} = .*$", f"{key} = {value}", text[start:end], flags=re.MULTILINE)
    assert count == 1, f"expected one '{key} =' line in the generated config"
    return text[:start] + part + text[end:]


@pytest.fixture
def configured_homeserver(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[ConfiguredHomeserver]:
    """A factory: ``configured_homeserver(open_registration=..., tokens=..., login_burst=...)``
    starts a server of the test's own; a ``login_burst`` turns rate limits on."""
    started: list[HomeserverProcess] = []

    def start(
        *,
        open_registration: bool,
        tokens: tuple[str, ...] = (),
        login_burst: int | None = None,
    ) -> HomeserverProcess:
        database_url = None
        if backend == "postgres":
            cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
            database_url = cluster.create_database()
        server = HomeserverProcess(backend, tmp_path / f"homeserver-{len(started)}", database_url)
        text = server.config_path.read_text(encoding="utf-8")
        text = _set_option(text, "open", "true" if open_registration else "false")
        text = _set_option(text, "tokens", "[" + ", ".join(f'"{t}"' for t in tokens) + "]")
        if login_burst is not None:
            text = _set_option(text, "enabled", "true", section="rate_limits")
            text = _set_option(text, "login_burst", str(login_burst))
            text = _set_option(text, "login_per_second", "0.01")
        server.config_path.write_text(text, encoding="utf-8")
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
