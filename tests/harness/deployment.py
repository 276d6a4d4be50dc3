"""A multi-process deployment (issue 21) on the session's PostgreSQL cluster: one
generated config with a ``[workers]`` table shared by every process, each started as
``peyvand serve --worker NAME`` on its own port and log."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from harness.nginx import Nginx
from harness.ports import free_port
from harness.server import HomeserverProcess, new_homeserver

# A writer with every role but client reads.
WRITER_ROLES = ["event_writer", "federation_inbound", "federation_sender", "media", "background"]


class Deployment:
    """Processes by name, not started; ``roles`` maps each name to its roles; ``options``
    are set in the shared config as ``HomeserverProcess.configure`` sets them. With
    ``federation`` the deployment federates on a test network as a federating
    ``HomeserverProcess`` does (server name ``127.0.0.1:<federation_port>``, a self-signed
    certificate), except that no process listens on the federation port: the reverse
    proxy terminates TLS there (``Nginx(..., federation_port=...)``)."""

    def __init__(
        self,
        request: pytest.FixtureRequest,
        data_dir: Path,
        roles: Mapping[str, Sequence[str]],
        options: Mapping[str, str] | None = None,
        *,
        federation: bool = False,
    ) -> None:
        names = list(roles)
        first = new_homeserver("postgres", request, data_dir, federation=federation)
        self.federation_port = first.federation_port
        self.server_name = first.server_name
        if first.federation_port is not None:
            _unset_federation_port(first.config_path, first.federation_port)
        secret = data_dir / "workers.secret"
        secret.write_text(secrets.token_hex(32), encoding="utf-8")
        ports = {names[0]: first.port} | {name: free_port() for name in names[1:]}
        instances = ", ".join(
            f'{{name = "{name}", roles = {json.dumps(list(roles[name]))}, port = {ports[name]}}}'
            for name in names
        )
        first.configure(
            {
                "workers.secret_path": f'"{secret}"',
                "workers.instances": f"[{instances}]",
                **(options or {}),
            }
        )
        self.processes: dict[str, HomeserverProcess] = {}
        for name in names:
            process = copy.copy(first)
            process.worker = name
            process.port = ports[name]
            process.base_url = f"http://127.0.0.1:{ports[name]}"
            process.log_path = data_dir / f"server-{name}.log"
            self.processes[name] = process
        self.database_url = first.database_url

    def __getitem__(self, name: str) -> HomeserverProcess:
        return self.processes[name]

    def stop(self) -> None:
        for process in self.processes.values():
            if process.running:
                process.stop()


@contextlib.contextmanager
def behind_nginx(
    request: pytest.FixtureRequest,
    data_dir: Path,
    roles: Mapping[str, Sequence[str]],
    *,
    options: Mapping[str, str] | None = None,
    federation: bool = False,
) -> Iterator[tuple[Nginx, Deployment]]:
    """A ``Deployment`` (the first of ``roles`` its writer) with every process started,
    behind a started nginx (terminating federation TLS with ``federation``); both are
    stopped on leaving."""
    deployment = Deployment(request, data_dir, roles, options, federation=federation)
    first = next(iter(roles))
    nginx = Nginx(deployment[first].config_path, data_dir / "nginx", deployment.federation_port)
    try:
        for process in deployment.processes.values():
            process.start()
        nginx.start()
        yield nginx, deployment
    finally:
        nginx.stop()
        deployment.stop()


async def cut_bus(database_url: str, connection: str, allow: bool) -> None:
    """Close the bus connection whose application name is ``connection`` (``peyvand bus
    listen|send <worker>``) and refuse new connections to the deployment's database
    (``allow`` false), or let them in again (from the cluster's ``postgres`` database: a
    database cannot close itself)."""
    url = urlsplit(database_url)
    name = url.path.lstrip("/")
    conn = await asyncpg.connect(urlunsplit(url._replace(path="/postgres")))
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND application_name = $2",
                name,
                connection,
            )
    finally:
        await conn.close()


def _unset_federation_port(config_path: Path, port: int) -> None:
    """Comment out the generated config's ``federation.port`` (the one line naming it)."""
    text = config_path.read_text(encoding="utf-8")
    line = f"\nport = {port}\n"
    assert text.count(line) == 1, "expected one 'port =' line naming the federation port"
    config_path.write_text(text.replace(line, f"\n# port = {port}\n"), encoding="utf-8")


async def lease_holder(database_url: str, lease: str) -> str | None:
    """The holder of ``lease`` while it has not expired (None: nobody's)."""
    connection = await asyncpg.connect(database_url)
    try:
        holder = await connection.fetchval(
            "SELECT holder FROM leases WHERE name = $1 AND expires_ts > $2",
            lease,
            int(time.time() * 1000),
        )
    finally:
        await connection.close()
    return None if holder is None else str(holder)


async def until_lease_held(database_url: str, lease: str, holder: str, seconds: float) -> None:
    """Polls every 0.2 s until ``holder`` holds ``lease``; fails after ``seconds``."""
    for _ in range(int(seconds / 0.2)):
        if await lease_holder(database_url, lease) == holder:
            return
        await asyncio.sleep(0.2)
    found = await lease_holder(database_url, lease)
    raise AssertionError(f"{lease} not held by {holder} within {seconds} s: {found}")
