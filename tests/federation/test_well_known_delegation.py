"""``/.well-known/matrix/server`` delegation with a real Synapse (Server-Server API,
"Resolving server names", step 3): a Peyvand named ``localhost`` (a host name without a
port, so a peer must look for a well-known file) delegates to ``127.0.0.1:<its federation
port>``, and Synapse reaches it through that file alone.

Synapse fetches the file from ``https://localhost/`` on port 443 only (no setting moves
it), so the test forwards ``127.0.0.1:443`` to Peyvand's federation listener, which serves
the file over TLS: binding port 443 needs root or CAP_NET_BIND_SERVICE. Without the file
Synapse would try ``localhost:8448``, where nothing listens. Discovery touches no storage,
so this runs on SQLite only (Synapse caches the delegation for hours, so one name must
keep pointing at one server for the session)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from harness.client import MatrixClient, new_session
from harness.server import new_homeserver

WELL_KNOWN_PORT = 443
TIMEOUT_SECONDS = 30.0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def forwarded_port(listen_port: int, target_port: int) -> AsyncIterator[None]:
    """TCP from ``127.0.0.1:listen_port`` to ``127.0.0.1:target_port``, byte for byte."""

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target_reader, target_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(_pipe(reader, target_writer), _pipe(target_reader, writer))

    try:
        server = await asyncio.start_server(forward, "127.0.0.1", listen_port)
    except OSError as exc:
        pytest.fail(
            f"cannot listen on 127.0.0.1:{listen_port} ({exc}): Synapse fetches well-known "
            "files from port 443 only, so this test needs root or CAP_NET_BIND_SERVICE"
        )
    async with server:
        yield


async def test_synapse_finds_peyvand_through_its_well_known(
    request: pytest.FixtureRequest, tmp_path: Path, synapse_client: MatrixClient
) -> None:
    peyvand = new_homeserver("sqlite", request, tmp_path / "homeserver", federation=True)
    port = peyvand.federation_port
    assert port is not None
    peyvand.configure({"server_name": '"localhost"', "well_known.server": f'"127.0.0.1:{port}"'})
    peyvand.start()
    try:
        async with new_session() as session, forwarded_port(WELL_KNOWN_PORT, port):
            local = MatrixClient(session, peyvand.base_url)
            alice = await local.register()
            assert alice.user_id.endswith(":localhost")
            path = f"profile/{quote(alice.user_id)}/displayname"
            (await local.request("PUT", path, {"displayname": "Delegated Alice"}, alice)).ok()
            bob = await synapse_client.register()
            async with asyncio.timeout(TIMEOUT_SECONDS):
                profile = await synapse_client.request("GET", path, token=bob)
    finally:
        peyvand.stop()
    assert profile.ok() == {"displayname": "Delegated Alice"}
