"""Two federating servers as one federation test sees them (``tests/federation``'s
``pair`` fixture), and state changes that cross between them: state resolution (Server-Server
API, "Room State Resolution") must leave both with the same room state. Also a Peyvand
room joined by a user of a fake server (``fake_peer_room``), and the fake's PDUs sent and
accepted (``send_accepted``)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote

from harness.client import Account, MatrixClient, Response
from harness.fake_server import FakeServer
from harness.rooms import create_room
from harness.server import HomeserverProcess
from harness.synapse import SynapseProcess
from peyvand.events.pdu import Pdu

_fake_users = itertools.count()


@dataclass(frozen=True)
class Pair:
    """Peyvand and its peer, each with a client and a user of its own."""

    peyvand: HomeserverProcess
    peyvand_client: MatrixClient
    peer: SynapseProcess | HomeserverProcess
    peer_client: MatrixClient
    alice: Account
    bob: Account

    def unpack(
        self,
    ) -> tuple[
        HomeserverProcess,
        MatrixClient,
        SynapseProcess | HomeserverProcess,
        MatrixClient,
        Account,
        Account,
    ]:
        """``(peyvand, peyvand_client, peer, peer_client, alice, bob)``."""
        return (
            self.peyvand,
            self.peyvand_client,
            self.peer,
            self.peer_client,
            self.alice,
            self.bob,
        )


async def state_map(
    client: MatrixClient, account: Account, room_id: str
) -> dict[tuple[str, str], Any]:
    """The room's current state as ``account`` sees it: ``(type, state_key) -> content``."""
    events = (await client.request("GET", f"rooms/{quote(room_id)}/state", token=account)).ok()
    return {(e["type"], e["state_key"]): e["content"] for e in events}


async def change_state_at_once(pair: Pair, room_id: str, power: dict[str, Any]) -> None:
    """Four state changes sent together, to cross in federation: each user sets the topic,
    ``bob`` sets ``power`` with ``events_default`` 10, ``alice`` renames the room (both may
    change any state); each must succeed."""

    def put_state(
        client: MatrixClient, account: Account, event_type: str, content: dict[str, Any]
    ) -> Awaitable[Response]:
        return client.request(
            "PUT", f"rooms/{quote(room_id)}/state/{event_type}", json=content, token=account
        )

    results = await asyncio.gather(
        put_state(pair.peyvand_client, pair.alice, "m.room.topic", {"topic": "from peyvand"}),
        put_state(pair.peer_client, pair.bob, "m.room.topic", {"topic": "from the peer"}),
        put_state(
            pair.peer_client, pair.bob, "m.room.power_levels", dict(power, events_default=10)
        ),
        put_state(pair.peyvand_client, pair.alice, "m.room.name", {"name": "renamed on peyvand"}),
    )
    for result in results:
        result.ok()


async def converged_state(
    pair: Pair, room_id: str, attempts: int, interval: float
) -> tuple[dict[tuple[str, str], Any], dict[tuple[str, str], Any]]:
    """The room's state on Peyvand (as ``alice`` sees it) and on the peer (as ``bob``
    does), read every ``interval`` seconds until they agree or ``attempts`` reads pass;
    the last two read."""
    on_peyvand: dict[tuple[str, str], Any] = {}
    on_peer: dict[tuple[str, str], Any] = {}
    for _ in range(attempts):
        on_peyvand = await state_map(pair.peyvand_client, pair.alice, room_id)
        on_peer = await state_map(pair.peer_client, pair.bob, room_id)
        if on_peyvand == on_peer:
            break
        await asyncio.sleep(interval)
    return on_peyvand, on_peer


class FakePeerRoom(NamedTuple):
    """A Peyvand user's public room that a user of a fake server has joined."""

    alice: Account
    """The Peyvand user who created the room."""
    bob: str
    """The fake's user, joined."""
    room_id: str
    join: dict[str, Any]
    """The send_join answer."""


async def fake_peer_room(
    client: MatrixClient, fake: FakeServer, localpart: str, room_version: str, **body: object
) -> FakePeerRoom:
    """A new Peyvand user creates a public room of ``room_version`` (``body``: more of the
    createRoom request), which a new user of ``fake`` (``localpart`` and a number) joins
    through make_join / send_join v2."""
    alice = await client.register()
    bob = fake.user(f"{localpart}{next(_fake_users)}")
    room_id = await create_room(
        client, alice, preset="public_chat", room_version=room_version, **body
    )
    join = await fake.join(room_id, bob)
    return FakePeerRoom(alice, bob, room_id, join)


async def send_accepted(fake: FakeServer, *pdus: Pdu) -> None:
    """Send ``pdus`` from ``fake`` in one transaction; the test fails unless it answers
    200 and accepts each of them."""
    status, answer = await fake.send_pdus(pdus)
    assert (status, answer["pdus"]) == (200, {p.event_id: {} for p in pdus}), answer
