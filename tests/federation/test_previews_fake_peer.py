"""What Peyvand serves other servers for jump to date (GET /timestamp_to_event/{roomId})
and room previews (GET /hierarchy/{roomId}), asked by a fake server on every backend:
answers for a server in the room, the room's m.space.child events, and the spec's errors
for servers outside it, unknown rooms, the ACL and bad parameters."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from harness.client import MatrixClient
from harness.fake_server import FakeServer
from harness.federation import fake_peer_room
from harness.rooms import create_room, say

_V1 = "/_matrix/federation/v1"


async def _timestamp_to_event(
    fake: FakeServer, room_id: str, query: dict[str, str]
) -> tuple[int, Any]:
    return await fake.request("GET", f"{_V1}/timestamp_to_event/{quote(room_id)}", query=query)


async def _hierarchy(fake: FakeServer, room_id: str, **query: str) -> tuple[int, Any]:
    return await fake.request("GET", f"{_V1}/hierarchy/{quote(room_id)}", query=query or None)


async def test_a_server_in_the_room_gets_answers(
    peyvand_client: MatrixClient, fake: FakeServer
) -> None:
    room = await fake_peer_room(
        peyvand_client, fake, "previewer", "10", name="Space", creation_content={"type": "m.space"}
    )
    message = await say(peyvand_client, room.room_id, room.alice, "hello")
    event = await peyvand_client.request(
        "GET", f"rooms/{quote(room.room_id)}/event/{message}", token=room.alice
    )
    ts = event.ok()["origin_server_ts"]
    status, found = await _timestamp_to_event(fake, room.room_id, {"ts": str(ts), "dir": "b"})
    assert (status, found) == (200, {"event_id": message, "origin_server_ts": ts})
    status, later = await _timestamp_to_event(
        fake, room.room_id, {"ts": str(ts + 3_600_000), "dir": "f"}
    )
    assert (status, later["errcode"]) == (404, "M_NOT_FOUND")

    for child, suggested in (("!a:example.org", True), ("!b:example.org", False)):
        content = {"via": ["example.org"], "suggested": suggested}
        path = f"rooms/{quote(room.room_id)}/state/m.space.child/{quote(child)}"
        (await peyvand_client.request("PUT", path, json=content, token=room.alice)).ok()
    invalid = f"rooms/{quote(room.room_id)}/state/m.space.child/{quote('!c:example.org')}"
    (await peyvand_client.request("PUT", invalid, json={"via": []}, token=room.alice)).ok()
    status, answer = await _hierarchy(fake, room.room_id)
    assert status == 200, answer
    assert answer["room"]["room_id"] == room.room_id and answer["room"]["name"] == "Space"
    assert answer["room"]["num_joined_members"] == 2
    assert [c["state_key"] for c in answer["room"]["children_state"]] == [
        "!a:example.org",
        "!b:example.org",
    ]
    assert answer["children"] == [] and answer["inaccessible_children"] == []
    status, suggested_only = await _hierarchy(fake, room.room_id, suggested_only="true")
    assert [c["state_key"] for c in suggested_only["room"]["children_state"]] == ["!a:example.org"]


async def test_servers_outside_the_room_and_bad_input(
    peyvand_client: MatrixClient, fake: FakeServer
) -> None:
    alice = await peyvand_client.register()
    private = await create_room(peyvand_client, alice, preset="private_chat")
    status, answer = await _timestamp_to_event(fake, private, {"ts": "1", "dir": "f"})
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
    status, answer = await _hierarchy(fake, private)
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")
    for path in ("timestamp_to_event", "hierarchy"):
        status, answer = await fake.request(
            "GET", f"{_V1}/{path}/{quote('!unknown:example.org')}", query={"ts": "1", "dir": "f"}
        )
        assert (status, answer["errcode"]) == (404, "M_NOT_FOUND"), path

    room = await fake_peer_room(peyvand_client, fake, "asker", "10")
    bad: list[tuple[dict[str, str], str]] = [
        ({"dir": "f"}, "M_MISSING_PARAM"),
        ({"ts": "1"}, "M_MISSING_PARAM"),
        ({"ts": "yesterday", "dir": "f"}, "M_INVALID_PARAM"),
        ({"ts": "1", "dir": "up"}, "M_INVALID_PARAM"),
    ]
    for query, errcode in bad:
        status, answer = await _timestamp_to_event(fake, room.room_id, query)
        assert (status, answer["errcode"]) == (400, errcode), query
    status, answer = await _hierarchy(fake, room.room_id, suggested_only="maybe")
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")

    # A room whose ACL denies IP literals, so the fake (127.0.0.1:port): refused.
    acl = {"allow": ["*"], "allow_ip_literals": False}
    path = f"rooms/{quote(room.room_id)}/state/m.room.server_acl"
    (await peyvand_client.request("PUT", path, json=acl, token=room.alice)).ok()
    status, answer = await _timestamp_to_event(fake, room.room_id, {"ts": "1", "dir": "f"})
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
    status, answer = await _hierarchy(fake, room.room_id)
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
