"""End-to-end encryption across servers with matrix-nio: a user on Peyvand and a user on
the peer (Synapse, or a second Peyvand) share an encrypted room and each decrypts the
other's messages. Device lists, key queries and claims, and the Olm to-device messages
that carry the Megolm keys all cross federation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nio
import pytest

from harness.client import MatrixClient
from harness.nio_client import E2eeUser, ok
from harness.server import HomeserverProcess
from harness.synapse import SynapseProcess

pytestmark = pytest.mark.clients

TIMEOUT_SECONDS = 90
MEGOLM = "m.megolm.v1.aes-sha2"
ENCRYPTION_STATE = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}

MakeUser = Callable[[MatrixClient, str], Awaitable[E2eeUser]]


@pytest.fixture
async def make_user(tmp_path: Path) -> AsyncIterator[MakeUser]:
    """``await make_user(client, base_url)``: a new account on that server with one
    encrypting nio device (keys uploaded)."""
    opened: list[nio.AsyncClient] = []

    async def make(client: MatrixClient, base_url: str) -> E2eeUser:
        account = await client.register()
        store = tmp_path / f"store-{len(opened)}"
        store.mkdir()
        config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
        nio_client = nio.AsyncClient(
            base_url, account.user_id, store_path=str(store), config=config
        )
        opened.append(nio_client)
        ok(await nio_client.login(account.password, device_name="nio e2ee"), nio.LoginResponse)
        user = E2eeUser(nio_client)
        await user.step()
        return user

    try:
        yield make
    finally:
        for nio_client in opened:
            await nio_client.close()
        await asyncio.sleep(0.25)  # let closed transports finish (aiohttp's advice)


async def test_encrypted_room_across_servers(
    peyvand: HomeserverProcess,
    peyvand_client: MatrixClient,
    peer: SynapseProcess | HomeserverProcess,
    peer_client: MatrixClient,
    make_user: MakeUser,
) -> None:
    async with asyncio.timeout(TIMEOUT_SECONDS):
        alice = await make_user(peyvand_client, peyvand.base_url)
        bob = await make_user(peer_client, peer.base_url)
        created = await alice.nio.room_create(name="secret", initial_state=[ENCRYPTION_STATE])
        room_id: str = ok(created, nio.RoomCreateResponse).room_id
        ok(await alice.nio.room_invite(room_id, bob.user_id), nio.RoomInviteResponse)
        await bob.step_until(lambda r: room_id in r.rooms.invite)
        ok(await bob.nio.join(room_id), nio.JoinResponse)
        await bob.step_until(lambda _: room_id in bob.nio.rooms)
        assert bob.nio.rooms[room_id].encrypted
        await alice.step_until(lambda _: bob.user_id in alice.nio.rooms[room_id].users)

        from_alice = await alice.send_text(room_id, "a secret from peyvand")
        assert (await bob.decrypted(from_alice)).body == "a secret from peyvand"
        from_bob = await bob.send_text(room_id, "a secret back")
        assert (await alice.decrypted(from_bob)).body == "a secret back"
    assert "Unhandled error" not in peyvand.log()
