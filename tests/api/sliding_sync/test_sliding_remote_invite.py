"""Invites to rooms on another server in sliding sync lists: their filters judged by the
stripped state the invite carried (as Synapse), and a rejected one leaves the list (MSC4186,
"Room results": rooms the user "is invited to (or rejected an invite to)"), as /sync's
``leave`` section shows it: this server holds neither the room's state nor the leave
(sent to the inviting server only), so the room is sent once with its ``membership``.

The inviting server is the fake peer (``harness.fake_server``); it does not answer
``make_leave``, so the rejection is kept here only, as when the inviter is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from harness.client import Account, MatrixClient, new_session
from harness.fake_server import FEDERATION_V2, FakeServer, q
from harness.server import HomeserverProcess, start_homeserver
from harness.sliding_sync import one_list, sliding, window

TIMEOUT_SECONDS = 60


@pytest.fixture
def federating(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[HomeserverProcess]:
    """A federating Peyvand of this test's own."""
    server = start_homeserver(backend, request, tmp_path / "peyvand", federation=True)
    try:
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def _peer(
    federating: HomeserverProcess, tmp_path: Path
) -> AsyncIterator[tuple[MatrixClient, Account, FakeServer]]:
    """A client of the federating Peyvand, a new user of it, and the fake peer (bounded
    in time); the server logged no unhandled error meanwhile."""
    async with (
        new_session() as session,
        FakeServer(tmp_path, peer=federating.server_name) as fake,
        asyncio.timeout(TIMEOUT_SECONDS),
    ):
        client = MatrixClient(session, federating.base_url)
        yield client, await client.register(), fake
    assert "Unhandled error" not in federating.log()


async def test_a_rejected_remote_invite_leaves_the_list(
    federating: HomeserverProcess, tmp_path: Path
) -> None:
    async with _peer(federating, tmp_path) as (client, alice, fake):
        room_id = f"!remote:{fake.server_name}"
        await _invite(fake, room_id, alice.user_id, [{"type": "m.room.create", "content": {}}])
        body = {"lists": one_list(timeline_limit=5, required_state=[["m.room.member", "$ME"]])}

        invited = await sliding(client, alice, body)
        assert window(invited) == [room_id]
        assert "invite_state" in invited["rooms"][room_id]

        path = f"rooms/{quote(room_id)}/leave"
        (await client.request("POST", path, json={}, token=alice)).ok()
        left = await sliding(client, alice, body, invited["pos"])
        room = left["rooms"][room_id]
        assert room["membership"] == "leave"
        assert room["initial"] is True
        assert "invite_state" not in room and "timeline" not in room
        assert window(left) == [room_id]

        # Sent once: the next response has neither the room nor anything to say of it.
        after = await sliding(client, alice, body, left["pos"])
        assert room_id not in after["rooms"]
        assert window(after) == [] and after["lists"]["all"]["count"] == 0


async def _invite(
    fake: FakeServer, room_id: str, invitee: str, stripped: list[dict[str, Any]]
) -> None:
    """An invite from the fake server's bob, its stripped state ``stripped`` (each with
    the state key "" and bob as sender)."""
    await _send_invite(
        fake,
        room_id,
        invitee,
        lambda sender: [{**e, "state_key": "", "sender": sender} for e in stripped],
    )


async def _send_invite(
    fake: FakeServer, room_id: str, invitee: str, stripped: Callable[[str], list[object]]
) -> None:
    """An invite from the fake server's bob whose ``invite_room_state`` is
    ``stripped(bob)``, as it is."""
    invite = fake.make_invite(room_id, fake.user("bob"), invitee)
    events = stripped(invite.sender)
    status, answer = await fake.request(
        "PUT",
        f"{FEDERATION_V2}/invite/{q(room_id)}/{q(invite.event_id)}",
        {"room_version": "11", "event": dict(invite.data), "invite_room_state": events},
    )
    assert status == 200, answer


async def test_filters_judge_a_remote_invite_by_its_stripped_state(
    federating: HomeserverProcess, tmp_path: Path
) -> None:
    """Element X's room list asks ``not_room_types: ["m.space"]``: an invite to a remote
    room whose stripped state names its create event is listed by its type and
    encryption; one whose stripped state lacks it fails every filter on state."""
    async with _peer(federating, tmp_path) as (client, alice, fake):
        plain, space, unknown = (f"!{name}:{fake.server_name}" for name in "abc")
        encryption = {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1"}}
        await _invite(
            fake, plain, alice.user_id, [{"type": "m.room.create", "content": {}}, encryption]
        )
        await _invite(
            fake, space, alice.user_id, [{"type": "m.room.create", "content": {"type": "m.space"}}]
        )
        await _invite(fake, unknown, alice.user_id, [{"type": "m.room.name", "content": {}}])

        async def listed(filters: dict[str, object]) -> set[str]:
            answer = await sliding(client, alice, {"lists": one_list(filters=filters)})
            return set(window(answer))

        assert await listed({}) == {plain, space, unknown}
        assert await listed({"not_room_types": ["m.space"]}) == {plain}
        assert await listed({"room_types": ["m.space"]}) == {space}
        assert await listed({"room_types": [None]}) == {plain}
        assert await listed({"is_encrypted": True}) == {plain}
        assert await listed({"is_encrypted": False}) == {space}


async def test_malformed_stripped_state_is_dropped_on_arrival(
    federating: HomeserverProcess, tmp_path: Path
) -> None:
    """Entries of ``invite_room_state`` that are not stripped state events (a list as
    ``type``, a number as ``sender``, a string as ``content``) are dropped as the invite
    arrives; the well-formed ones are kept, and filters and /sync read them without
    error."""
    async with _peer(federating, tmp_path) as (client, alice, fake):
        room_id = f"!hostile:{fake.server_name}"
        await _send_invite(
            fake,
            room_id,
            alice.user_id,
            lambda sender: [
                {"type": ["m.room.create"], "state_key": "", "sender": sender, "content": {}},
                {"type": "m.room.name", "state_key": "", "sender": 5, "content": {"name": "n"}},
                {"type": "m.room.topic", "state_key": "", "sender": sender, "content": "x"},
                "not an object",
                {"type": "m.room.create", "state_key": "", "sender": sender, "content": {}},
            ],
        )

        body = {"lists": one_list(filters={"not_room_types": ["m.space"]})}
        listed = await sliding(client, alice, body)
        assert window(listed) == [room_id]
        shown = listed["rooms"][room_id]["invite_state"]
        assert [(e["type"], e["state_key"]) for e in shown] == [
            ("m.room.create", ""),
            ("m.room.member", alice.user_id),
        ]
        synced = (await client.request("GET", "sync", token=alice)).ok()
        events = synced["rooms"]["invite"][room_id]["invite_state"]["events"]
        assert [e["type"] for e in events] == ["m.room.create", "m.room.member"]
