"""Server admins for tests, made the operator's way (``peyvand register-user --admin``)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from harness.client import Account, MatrixClient, unique_localpart
from harness.server import HomeserverProcess

ADMIN_PASSWORD = "test server admin password"


def register_admin(server: HomeserverProcess, prefix: str = "admin") -> str:
    """A new server admin on ``server`` (password ``ADMIN_PASSWORD``); its localpart."""
    name = unique_localpart(prefix)
    subprocess.run(
        [
            sys.executable, "-m", "peyvand", "register-user", "--config", str(server.config_path),
            "--user", name, "--password", ADMIN_PASSWORD, "--admin",
        ],
        check=True,
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return name


async def login_admin(client: MatrixClient, server: HomeserverProcess) -> Account:
    """A new server admin on ``server``, logged in through ``client``."""
    name = await asyncio.to_thread(register_admin, server)
    return await client.login(name, ADMIN_PASSWORD)
