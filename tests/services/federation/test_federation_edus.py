"""FederationEdus (services/federation/edus.py) over the real services on a SQLite
database (``harness.edu_world``): typing and receipts both ways, malformed EDUs, the
server ACL (Server-Server API, "Typing Notifications", "Receipts")."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from harness.edu_world import (
    ALICE,
    BOB,
    CAROL,
    DAN,
    REMOTE,
    World,
    edu,
    open_world,
)
from peyvand.services.federation.forwarded_edus import PrimaryEdus
from peyvand.services.timeline.event_creation import EventSpec
from peyvand.types import JsonDict, ServerName


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path) as opened:
        yield opened


# Inbound: typing ---------------------------------------------------------------------------


async def test_remote_typing_reaches_local_users_and_expires(world: World) -> None:
    typing = world.node.typing
    since = typing.current_position
    await world.node.edus.on_edus(
        REMOTE, [edu("m.typing", {"room_id": world.room, "user_id": BOB, "typing": True})]
    )
    assert typing.typing_for_rooms([world.room], since) == {
        world.room: {"type": "m.typing", "content": {"user_ids": [BOB]}}
    }
    assert world.notifier.current_token.typing == typing.current_position > since
    world.node.clock.now += 31
    await typing.expire_due()
    assert typing.typing_for_rooms([world.room], since)[world.room]["content"]["user_ids"] == []
    # A remote user's typing is never relayed to other servers.
    assert world.node.sender.ephemeral == []


@pytest.mark.parametrize(
    ("room", "user", "typing"),
    [
        ("!unknown:remote.org", BOB, True),
        (None, BOB, True),
        ("joined", CAROL, True),  # not joined
        ("joined", DAN, True),  # not a user of the origin
        ("joined", BOB, "yes"),
        ("joined", "bob", True),
    ],
)
async def test_bad_typing_is_ignored(
    world: World, room: str | None, user: str, typing: Any, caplog: pytest.LogCaptureFixture
) -> None:
    content = {"user_id": user, "typing": typing}
    if room is not None:
        content["room_id"] = world.room if room == "joined" else room
    since = world.node.typing.current_position
    with caplog.at_level(logging.INFO, "peyvand.services.federation.edus"):
        await world.node.edus.on_edus(REMOTE, [edu("m.typing", content)])
    assert world.node.typing.typing_for_rooms([world.room], since) == {}
    assert "ignored" in caplog.text


async def test_malformed_edus_never_raise_and_presence_is_ignored(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    since = world.notifier.current_token
    with caplog.at_level(logging.INFO, "peyvand.services.federation.edus"):
        await world.node.edus.on_edus(
            REMOTE,
            [
                None,
                [],
                {"edu_type": 3, "content": {}},
                {"edu_type": "m.typing"},
                {"edu_type": "m.typing", "content": []},
                edu("m.presence", {"push": [{"user_id": BOB, "presence": "online"}]}),
                edu("m.unknown", {}),
                edu("m.receipt", {world.room: []}),
                edu("m.direct_to_device", {"sender": BOB}),
                edu("m.device_list_update", {"user_id": BOB, "device_id": 5}),
                edu("m.signing_key_update", {"user_id": BOB, "master_key": "nope"}),
            ],
        )
    assert world.notifier.current_token == since
    # Each was ignored as malformed (or unsupported), none failed.
    assert not [r for r in caplog.records if r.levelno > logging.INFO]
    assert sum("ignored" in r.getMessage() for r in caplog.records) == 9


async def test_server_acl_denies_typing_and_receipts_from_a_denied_server(world: World) -> None:
    acl = {"allow": ["*"], "deny": ["remote.org"], "allow_ip_literals": True}
    await world.events.send(world.room, ALICE, EventSpec("m.room.server_acl", acl, ""))
    since = world.node.typing.current_position
    receipts_since = world.node.receipts.current_position
    await world.node.edus.on_edus(
        REMOTE,
        [
            edu("m.typing", {"room_id": world.room, "user_id": BOB, "typing": True}),
            edu("m.receipt", {world.room: {"m.read": {BOB: receipt(world.message)}}}),
        ],
    )
    assert world.node.typing.typing_for_rooms([world.room], since) == {}
    assert world.node.receipts.current_position == receipts_since
    # The servers the ACL allows still are.
    typing = {"room_id": world.room, "user_id": DAN, "typing": True}
    await world.node.edus.on_edus(ServerName("other.org"), [edu("m.typing", typing)])
    typing_now = world.node.typing.typing_for_rooms([world.room], since)
    assert typing_now[world.room]["content"]["user_ids"] == [DAN]


# Inbound: receipts -------------------------------------------------------------------------


def receipt(event_id: str, ts: int = 1234, **data: Any) -> JsonDict:
    return {"event_ids": [event_id], "data": {"ts": ts, **data}}


async def test_remote_receipts_are_stored_for_local_syncs(world: World) -> None:
    since = world.node.receipts.current_position
    content = {
        world.room: {
            "m.read": {
                BOB: receipt(world.message, thread_id="main"),
                CAROL: receipt(world.message),  # not joined
                DAN: receipt(world.message),  # not of the origin
                "@eve:remote.org": {"event_ids": []},
            },
            "m.read.private": {BOB: receipt(world.message)},  # never federated
        },
        "!unknown:remote.org": {"m.read": {BOB: receipt(world.message)}},
    }
    await world.node.edus.on_edus(REMOTE, [edu("m.receipt", content)])
    now = world.node.receipts.current_position
    assert now == since + 1
    found = await world.node.receipts.receipts_for_rooms(ALICE, [world.room], since, now)
    assert found == {
        world.room: {
            "type": "m.receipt",
            "content": {world.message: {"m.read": {BOB: {"ts": 1234, "thread_id": "main"}}}},
        }
    }
    assert world.notifier.current_token.receipts == now
    assert world.node.sender.ephemeral == []


async def test_remote_receipt_for_an_unknown_event_is_not_stored(world: World) -> None:
    since = world.node.receipts.current_position
    content = {world.room: {"m.read": {BOB: receipt("$unknown")}}}
    await world.node.edus.on_edus(REMOTE, [edu("m.receipt", content)])
    assert world.node.receipts.current_position == since


# Outbound ----------------------------------------------------------------------------------


async def test_local_typing_goes_to_every_other_server_in_the_room(world: World) -> None:
    await world.node.typing.set_typing(ALICE, ALICE, world.room, True)
    await world.node.typing.set_typing(ALICE, ALICE, world.room, False)
    await world.node.typing.set_typing(ALICE, ALICE, world.room, False)  # not typing: nothing
    await world.node.typing.set_typing(ALICE, ALICE, world.room, True, timeout_ms=1000)
    world.node.clock.now += 2
    await world.node.typing.expire_due()
    sent = [(d, t, c["typing"]) for d, t, c in world.node.sender.ephemeral]
    assert sent == [
        (server, "m.typing", typing)
        for typing in (True, False, True, False)
        for server in ("other.org", "remote.org")
    ]
    assert world.node.sender.ephemeral[0][2] == {
        "room_id": world.room,
        "user_id": ALICE,
        "typing": True,
    }
    assert world.node.sender.durable == []


async def test_local_read_receipts_go_out_and_private_ones_do_not(world: World) -> None:
    await world.node.receipts.send_receipt(ALICE, world.room, "m.read.private", world.message)
    assert world.node.sender.ephemeral == []
    await world.node.receipts.send_receipt(ALICE, world.room, "m.read", world.message, "main")
    await world.node.receipts.send_receipt(ALICE, world.room, "m.read", world.message, "main")
    assert [d for d, _, _ in world.node.sender.ephemeral] == ["other.org", "remote.org"]
    _, edu_type, content = world.node.sender.ephemeral[0]
    assert edu_type == "m.receipt"
    (data,) = [content[world.room]["m.read"][ALICE]]
    assert data["event_ids"] == [world.message]
    assert data["data"]["thread_id"] == "main" and isinstance(data["data"]["ts"], int)


# A deployment (issue 21) ---------------------------------------------------------------------


class _Primary:
    """``PrimaryEdus`` stand-in: whether this process is the primary; what it forwarded."""

    def __init__(self, here: bool) -> None:
        self.held = here
        self.forwarded: list[tuple[str, list[Any]]] = []

    def here(self) -> bool:
        return self.held

    @staticmethod
    def split(edus: Any) -> tuple[list[Any], list[Any]]:
        return PrimaryEdus.split(edus)

    async def forward(self, origin: str, edus: list[Any]) -> None:
        self.forwarded.append((origin, edus))


async def test_receipts_go_to_the_primary_which_catches_up_first(world: World) -> None:
    """Away from the primary, receipts and to-device messages are handed to it and typing
    applied here; on the primary, forwarded EDUs wait for every stored event to be
    announced (a join another writer stored) before they are applied (a writer that is
    not the primary refuses them: ``test_primary_routes``)."""
    primary = _Primary(here=False)
    world.node.edus.forward_to_primary(cast(Any, primary))
    receipts = edu("m.receipt", {world.room: {"m.read": {BOB: receipt(world.message)}}})
    typing = edu("m.typing", {"room_id": world.room, "user_id": BOB, "typing": True})
    since = world.node.receipts.current_position
    await world.node.edus.on_edus(REMOTE, [receipts, typing])
    assert primary.forwarded == [(REMOTE, [receipts])]
    assert world.node.receipts.current_position == since
    assert world.node.typing.typing_for_rooms([world.room], 0)[world.room]["content"] == {
        "user_ids": [BOB]
    }

    caught_up: list[int] = []

    async def catch_up() -> None:
        caught_up.append(world.node.receipts.current_position)

    primary.held = True
    world.node.edus.forward_to_primary(cast(Any, primary), catch_up)
    await world.node.edus.receive_forwarded(REMOTE, [receipts])
    assert caught_up == [since]
    assert world.node.receipts.current_position == since + 1
