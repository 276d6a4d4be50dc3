"""Federation senders stand in for each other (issue 21: "federation senders (sharded by
destination)", and keep running when one of them dies; ``wiring.sender_shards``): an
event writer and two ``federation_sender`` processes behind nginx. Each sender holds the
lease of its own share of the destinations. The sender of a fake server's share is
killed (kill -9): a message sent while it is down reaches the fake server from the other
sender once the share's lease has expired (the writer, which stands in too, has the
federation_sender role's processes as rivals: either may take it); started again, the
sender takes its share back and sends the next message."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.client import MatrixClient, new_session
from harness.deployment import (
    WRITER_ROLES,
    Deployment,
    behind_nginx,
    lease_holder,
    until_lease_held,
)
from harness.fake_server import FakeServer
from harness.nginx import Nginx
from harness.rooms import create_room, say
from peyvand.types import ServerName

TIMEOUT_SECONDS = 90
# The lease period (6 s) and a retry (2 s), with room for a loaded machine.
TAKEOVER_SECONDS = 15


@pytest.fixture
def two_senders(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Nginx, Deployment]]:
    writer = ["client_reader", *(role for role in WRITER_ROLES if role != "federation_sender")]
    roles = {"writer": writer, "sender1": ["federation_sender"], "sender2": ["federation_sender"]}
    with behind_nginx(request, tmp_path, roles, federation=True) as deployed:
        yield deployed


def _body(text: str) -> Any:
    return lambda pdu: pdu.get("content", {}).get("body") == text


async def test_a_killed_senders_share_is_sent_by_the_other_until_it_is_back(
    two_senders: tuple[Nginx, Deployment], tmp_path: Path
) -> None:
    nginx, deployment = two_senders
    url = deployment.database_url
    assert url is not None
    peer = ServerName(deployment.server_name)
    async with FakeServer(tmp_path / "fake", peer=peer) as fake, new_session() as session:
        shard = zlib.crc32(fake.server_name.encode()) % 2
        owner, other = ("sender1", "sender2") if shard == 0 else ("sender2", "sender1")
        lease = f"federation sender {shard + 1} of 2"
        front = MatrixClient(session, nginx.base_url)
        async with asyncio.timeout(TIMEOUT_SECONDS):
            alice = await front.register()
            room_id = await create_room(front, alice, preset="public_chat")
            await until_lease_held(url, lease, owner, TIMEOUT_SECONDS)
            await fake.join(room_id, f"@bob:{fake.server_name}")
            await say(front, room_id, alice, "before")
            await fake.wait_for_pdu(_body("before"))

            deployment[owner].kill()
            killed = time.monotonic()
            await say(front, room_id, alice, "while down")
            await fake.wait_for_pdu(_body("while down"))
            assert time.monotonic() - killed <= TAKEOVER_SECONDS
            assert await lease_holder(url, lease) in (other, "writer")

            deployment[owner].start()
            await until_lease_held(url, lease, owner, TIMEOUT_SECONDS)
            await say(front, room_id, alice, "after")
            await fake.wait_for_pdu(_body("after"))
    for name in ("writer", other, owner):
        assert "Unhandled error" not in deployment[name].log()
