"""Fixtures for the client-library tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import nio
import pytest

from harness.nio_client import new_client
from harness.server import HomeserverProcess


@pytest.fixture
async def pair(
    homeserver: HomeserverProcess, tmp_path: Path
) -> AsyncIterator[tuple[nio.AsyncClient, nio.AsyncClient]]:
    for name in ("alice", "bob"):
        (tmp_path / name).mkdir()
    alice = await new_client(homeserver.base_url, tmp_path / "alice")
    bob = await new_client(homeserver.base_url, tmp_path / "bob")
    try:
        yield alice, bob
    finally:
        await alice.close()
        await bob.close()
        # aiohttp's advice for a graceful shutdown: let aborted transports (such as a
        # refused upload's) finish closing before the loop moves on.
        await asyncio.sleep(0.25)
