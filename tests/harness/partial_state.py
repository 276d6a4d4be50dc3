"""A room of a fake resident server that Peyvand joins with partial state (MSC3706 /
MSC3902; Server-Server API, send_join v2 with ``omit_members``), for
``tests/federation/test_partial_state_*``: ``host_partial_room`` builds the room and
serves make_join and send_join (member events omitted); each test serves ``/state_ids``
as it needs (``PartialRoom.state_ids`` answers with the state at a join);
``join_partially`` joins a new local user through the fake."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from harness.client import Account, MatrixClient
from harness.fake_server import FakeRequest, FakeRoom, FakeServer
from harness.server import HomeserverProcess
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS


@dataclass
class PartialRoom:
    """The fake's room and the state it had before each join it took (event ids)."""

    room: FakeRoom
    state_at_join: dict[str, list[str]] = field(default_factory=dict)

    def state_ids(self, request: FakeRequest) -> tuple[int, Any]:
        """A ``/state_ids`` answer: the state before the join named by ``event_id``."""
        ids = self.state_at_join.get(request.query["event_id"][0])
        if ids is None:
            return 404, {"errcode": "M_NOT_FOUND", "error": "unknown event"}
        return 200, {"pdu_ids": ids, "auth_chain_ids": []}


def host_partial_room(
    fake: FakeServer,
    room_id: str,
    members: int,
    name: str,
    *,
    banned: Sequence[str] = (),
    servers_in_room: Sequence[Any] = (),
    with_auth_chain: bool = False,
) -> PartialRoom:
    """A public room ``room_id`` (version 10) of the fake, named ``name``, with
    ``members`` of its users joined (``creator``, ``member0``, ...) and ``banned`` users
    banned, served as a resident does: make_join, and send_join omitting the member
    events but the creator's (MSC3706), naming the fake and then ``servers_in_room`` as
    the servers in the room, with the auth chain of the state ``with_auth_chain`` (else
    none)."""
    version = KNOWN_ROOM_VERSIONS["10"]
    room = FakeRoom(room_id, version, {}, [], 0)
    fake.rooms[room_id] = room
    hosted = PartialRoom(room)
    creator = fake.user("creator")
    for event_type, state_key, content in (
        ("m.room.create", "", {"creator": creator, "room_version": "10"}),
        ("m.room.member", creator, {"membership": "join"}),
        ("m.room.power_levels", "", {"users": {creator: 100}}),
        ("m.room.join_rules", "", {"join_rule": "public"}),
        ("m.room.history_visibility", "", {"history_visibility": "shared"}),
        ("m.room.name", "", {"name": name}),
    ):
        fake.track(fake.make_pdu(version, room_id, creator, event_type, content, state_key))
    for i in range(members - 1):
        user = fake.user(f"member{i}")
        fake.track(
            fake.make_pdu(version, room_id, user, "m.room.member", {"membership": "join"}, user)
        )
    for user in banned:
        fake.track(
            fake.make_pdu(version, room_id, creator, "m.room.member", {"membership": "ban"}, user)
        )

    def make_join(request: FakeRequest) -> tuple[int, Any]:
        user = request.params["user_id"]
        content = {"membership": "join"}
        return 200, {
            "room_version": "10",
            "event": {
                "room_id": room_id,
                "type": "m.room.member",
                "state_key": user,
                "sender": user,
                "content": content,
                "prev_events": list(room.extremities),
                "auth_events": fake.auth_events_for(room_id, "m.room.member", user, user, content),
                "depth": room.depth + 1,
                "origin_server_ts": int(time.time() * 1000),
            },
        }

    def send_join(request: FakeRequest) -> tuple[int, Any]:
        before = dict(room.state)
        join = fake.remember(request.body, version)
        hosted.state_at_join[join.event_id] = sorted(before.values())
        fake.track(join)
        kept = [e for k, e in before.items() if k[0] != "m.room.member" or k[1] == creator]
        chain = auth_closure(fake, kept) - set(kept) if with_auth_chain else set()
        return 200, {
            "event": dict(join.data),
            "state": [fake.events[e] for e in kept],
            "auth_chain": [fake.events[e] for e in chain],
            "members_omitted": True,
            "servers_in_room": [fake.server_name, *servers_in_room],
        }

    fake.on("GET", "/_matrix/federation/v1/make_join/{room_id}/{user_id}", make_join)
    fake.on("PUT", "/_matrix/federation/v2/send_join/{room_id}/{event_id}", send_join)
    return hosted


def auth_closure(fake: FakeServer, event_ids: Sequence[str]) -> set[str]:
    """``event_ids`` and their auth events, transitively, from the fake's events."""
    seen: set[str] = set()
    todo = list(event_ids)
    while todo:
        event_id = todo.pop()
        if event_id not in seen:
            seen.add(event_id)
            todo.extend(fake.events[event_id]["auth_events"])
    return seen


def fake_members(fake: FakeServer, members: int) -> set[str]:
    """The users of a room of ``host_partial_room`` with ``members`` joined."""
    return {fake.user("creator")} | {fake.user(f"member{i}") for i in range(members - 1)}


async def join_via(
    client: MatrixClient, account: Account, room_id: str, server_name: str
) -> tuple[int, dict[str, Any]]:
    """``account`` joins ``room_id`` through ``server_name``: the status and body."""
    answer = await client.request(
        "POST",
        f"join/{quote(room_id)}",
        json={},
        token=account,
        params={"server_name": server_name},
    )
    return answer.status, answer.body


async def join_partially(
    peyvand: HomeserverProcess, client: MatrixClient, fake: FakeServer, room: FakeRoom
) -> Account:
    """A new local user joined to the fake's ``room``, whose state is then partial here."""
    alice = await client.register()
    status, answer = await join_via(client, alice, room.room_id, fake.server_name)
    assert status == 200, answer
    assert f"joined {room.room_id} with partial state" in peyvand.log()
    return alice
