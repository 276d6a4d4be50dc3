"""The public room directory across servers (Server-Server API, "Public Room
Directory"; Client-Server API, "Listing rooms" with ``server``): a client asks its own
server for another server's list, with the filter and pagination, and each server
serves its list to the other (GET and POST /_matrix/federation/v1/publicRooms). Both
directions, with a real Synapse and with a second Peyvand.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from harness.client import Account, MatrixClient
from harness.fake_server import FEDERATION_V1, FakeRequest, FakeServer
from harness.federation import Pair
from harness.server import HomeserverProcess

TIMEOUT_SECONDS = 60


async def _public_rooms(
    client: MatrixClient, owner: Account, term: str, count: int, extra: dict[str, Any]
) -> set[str]:
    """``count`` published public rooms named with ``term``."""
    rooms = set()
    for index in range(count):
        created = await client.request(
            "POST",
            "createRoom",
            json={"preset": "public_chat", "visibility": "public", "name": f"{term} {index}"},
            token=owner,
        )
        rooms.add(str(created.ok()["room_id"]))
    if extra:
        created = await client.request(
            "POST",
            "createRoom",
            json={"preset": "public_chat", "visibility": "public", "name": term, **extra},
            token=owner,
        )
        created.ok()
    return rooms


async def _filtered_pages(
    client: MatrixClient, asker: Account, server: str, term: str
) -> list[list[str]]:
    """The other server's list filtered by ``term``, two rooms a page, every page."""
    pages: list[list[str]] = []
    since: str | None = None
    for _ in range(10):
        body: dict[str, Any] = {"limit": 2, "filter": {"generic_search_term": term}}
        if since is not None:
            body["since"] = since
        page = (
            await client.request(
                "POST", "publicRooms", json=body, token=asker, params={"server": server}
            )
        ).ok()
        pages.append([entry["room_id"] for entry in page["chunk"]])
        since = page.get("next_batch")
        if since is None:
            return pages
    raise AssertionError(f"more pages than expected: {pages}")


async def _other_servers_directory(
    owner_client: MatrixClient,
    owner: Account,
    asker_client: MatrixClient,
    asker: Account,
    server: str,
) -> None:
    term = f"dir{secrets.token_hex(4)}"
    local_only = {"creation_content": {"m.federate": False}}
    rooms = await _public_rooms(owner_client, owner, term, 3, local_only)
    pages: list[list[str]] = []
    for _ in range(TIMEOUT_SECONDS * 2):  # Synapse lists new rooms a moment later
        pages = await _filtered_pages(asker_client, asker, server, term)
        if {r for page in pages for r in page} >= rooms:
            break
        await asyncio.sleep(0.5)
    assert [len(page) for page in pages] == [2, 1], pages
    # Exactly the three rooms: not the one that does not federate.
    assert {r for page in pages for r in page} == rooms, pages
    everything = (
        await asker_client.request("GET", "publicRooms", token=asker, params={"server": server})
    ).ok()
    listed = {entry["room_id"] for entry in everything["chunk"]}
    assert rooms <= listed, everything


async def test_directory_of_the_other_server(pair: Pair) -> None:
    peyvand, peyvand_client, peer, peer_client, alice, bob = pair.unpack()
    async with asyncio.timeout(TIMEOUT_SECONDS * 2):
        await _other_servers_directory(peer_client, bob, peyvand_client, alice, peer.server_name)
        await _other_servers_directory(peyvand_client, alice, peer_client, bob, peyvand.server_name)


async def test_directory_of_another_server_needs_a_user_and_an_answer(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient, peyvand_peer: HomeserverProcess
) -> None:
    """Without an access token another server's list is 401 (this server would ask on
    the user's behalf); a server that cannot be reached is 502."""
    alice = await peyvand_client.register()
    anonymous = await peyvand_client.request(
        "GET", "publicRooms", params={"server": peyvand_peer.server_name}
    )
    assert anonymous.status == 401, (anonymous.status, anonymous.body)
    async with asyncio.timeout(TIMEOUT_SECONDS):
        unreachable = await peyvand_client.request(
            "GET", "publicRooms", token=alice, params={"server": "127.0.0.1:9"}
        )
    assert unreachable.status == 502, (unreachable.status, unreachable.body)
    assert unreachable.body["errcode"] == "M_UNKNOWN"


async def test_a_server_without_filtering_is_filtered_here(
    peyvand: HomeserverProcess, peyvand_client: MatrixClient, tmp_path: Path
) -> None:
    """A server that answers the filtered POST with 404 M_UNRECOGNIZED gets a GET of its
    whole list, filtered here (as Synapse falls back); a malformed list is 502."""
    alice = await peyvand_client.register()
    entries = [
        {"room_id": "!a:x", "name": "Gardening club", "num_joined_members": 3},
        {"room_id": "!b:x", "topic": "all about GARDENS", "num_joined_members": 2},
        {"room_id": "!c:x", "name": "Chess", "num_joined_members": 1},
        {"room_id": "!d:x", "name": "Garden spaces", "room_type": "m.space"},
        "not an entry",
    ]

    def unrecognized(request: FakeRequest) -> tuple[int, Any]:
        return 404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}

    def whole_list(request: FakeRequest) -> tuple[int, Any]:
        return 200, {"chunk": entries, "total_room_count_estimate": 5}

    async with FakeServer(tmp_path, peer=peyvand.server_name) as fake:
        fake.on("POST", f"{FEDERATION_V1}/publicRooms", unrecognized)
        fake.on("GET", f"{FEDERATION_V1}/publicRooms", whole_list)
        async with asyncio.timeout(TIMEOUT_SECONDS):
            filtered = await peyvand_client.request(
                "POST",
                "publicRooms",
                json={"limit": 1, "filter": {"generic_search_term": "garden"}},
                token=alice,
                params={"server": fake.server_name},
            )
            spaces = await peyvand_client.request(
                "POST",
                "publicRooms",
                json={"filter": {"room_types": ["m.space"]}},
                token=alice,
                params={"server": fake.server_name},
            )
            fake.on("GET", f"{FEDERATION_V1}/publicRooms", lambda _: (200, {"chunk": "no"}))
            malformed = await peyvand_client.request(
                "GET", "publicRooms", token=alice, params={"server": fake.server_name}
            )
        posts = fake.requests("POST", f"{FEDERATION_V1}/publicRooms")
    assert [e["room_id"] for e in filtered.ok()["chunk"]] == ["!a:x", "!b:x", "!d:x"]
    assert [e["room_id"] for e in spaces.ok()["chunk"]] == ["!d:x"]
    assert posts[0].body["filter"] == {"generic_search_term": "garden"}
    assert posts[0].body["limit"] == 1
    assert malformed.status == 502, (malformed.status, malformed.body)
