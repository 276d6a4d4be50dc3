"""Third-party networks answered by the bridges, over HTTP on every backend
(Client-Server API, "Third-party Lookup"; Application Service API, "Third-party
Networks"), and the network room lists appservices publish ("Application service room
directory") that ``/publicRooms`` shows with ``third_party_instance_id`` or
``include_all_networks``.

Two real loopback appservices bridge ``gitter`` (the first also claims ``irc`` but
cannot describe it) and a third, registered for ``gitter`` too, is down: its answers are
left out, never failing a lookup. A bridge's protocol description is kept (an hour, as
Synapse keeps it); lookups are asked each time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

from harness.appservice import RecordingAppService, write_registration
from harness.client import MatrixClient, new_session
from harness.ports import free_port
from harness.server import SERVER_NAME, HomeserverProcess, start_homeserver

FIRST_TOKEN = "as-token-thirdparty-first"
SECOND_TOKEN = "as-token-thirdparty-second"
FIRST_HS_TOKEN = "hs-token-thirdparty-first"
SECOND_HS_TOKEN = "hs-token-thirdparty-second"


def protocol_info(network_id: str) -> dict[str, Any]:
    return {
        "user_fields": ["username"],
        "location_fields": ["room"],
        "icon": "mxc://example.org/gitter",
        "field_types": {"room": {"regexp": "[^\\s]+", "placeholder": "matrix-org/matrix"}},
        "instances": [{"desc": network_id, "network_id": network_id, "fields": {}}],
    }


def location(room: str) -> dict[str, Any]:
    return {
        "alias": f"#gitter_{room}:{SERVER_NAME}",
        "protocol": "gitter",
        "fields": {"room": room},
    }


def remote_user(name: str) -> dict[str, Any]:
    return {
        "userid": f"@gitter_{name}:{SERVER_NAME}",
        "protocol": "gitter",
        "fields": {"username": name},
    }


@dataclass
class CountingBridge(RecordingAppService):
    """Records the third-party paths it is asked (``protocol/gitter``, ...)."""

    asked: list[str] = field(default_factory=list)

    async def _thirdparty(self, request: web.Request) -> web.Response:
        self.asked.append(request.path.removeprefix("/_matrix/app/v1/thirdparty/"))
        return await super()._thirdparty(request)


@pytest.fixture(scope="module")
async def bridges() -> AsyncIterator[tuple[CountingBridge, CountingBridge]]:
    first, second = CountingBridge(FIRST_HS_TOKEN), CountingBridge(SECOND_HS_TOKEN)
    first.thirdparty.update(
        {
            "protocol/gitter": protocol_info("gitter"),
            "location/gitter": [location("matrix"), {"alias": "not a result"}],
            "user/gitter": [remote_user("alice")],
            "location": [location("matrix")],
            "user": [remote_user("alice")],
        }
    )
    second.thirdparty.update(
        {
            "protocol/gitter": protocol_info("gitter-enterprise"),
            "location/gitter": [location("synapse")],
            "user/gitter": "not a list",
            "user": [remote_user("bob")],
        }
    )
    await first.start()
    await second.start()
    try:
        yield first, second
    finally:
        await first.stop()
        await second.stop()


@pytest.fixture(scope="module")
def thirdparty_homeserver(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    bridges: tuple[CountingBridge, CountingBridge],
) -> Iterator[HomeserverProcess]:
    data_dir = tmp_path_factory.mktemp("appservice-thirdparty")
    first, second = bridges
    registrations = [
        ("first", first.url, FIRST_TOKEN, FIRST_HS_TOKEN, ["gitter", "irc"]),
        ("second", second.url, SECOND_TOKEN, SECOND_HS_TOKEN, ["gitter"]),
        ("down", f"http://127.0.0.1:{free_port()}", "as-token-down", "hs-down", ["gitter"]),
    ]
    files = [
        write_registration(
            data_dir / f"{name}.yaml",
            appservice_id=name,
            url=url,
            as_token=as_token,
            hs_token=hs_token,
            sender_localpart=f"{name}thirdpartybot",
            user_regex=f"@{name}_.*:{SERVER_NAME}",
            protocols=protocols,
        )
        for name, url, as_token, hs_token, protocols in registrations
    ]
    options = {"app_service_config_files": "[" + ", ".join(f'"{f}"' for f in files) + "]"}
    with_server = start_homeserver(backend, request, data_dir / "server", options=options)
    try:
        yield with_server
    finally:
        with_server.stop()


@pytest.fixture
async def client(thirdparty_homeserver: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, thirdparty_homeserver.base_url)


async def test_protocols_merge_every_bridges_instances(client: MatrixClient) -> None:
    user = await client.register()
    protocols = (await client.request("GET", "thirdparty/protocols", token=user)).ok()
    assert list(protocols) == ["gitter"]
    gitter = protocols["gitter"]
    assert gitter["location_fields"] == ["room"]
    assert gitter["instances"] == [
        {"desc": "gitter", "network_id": "gitter", "fields": {}, "instance_id": "first|gitter"},
        {
            "desc": "gitter-enterprise",
            "network_id": "gitter-enterprise",
            "fields": {},
            "instance_id": "second|gitter-enterprise",
        },
    ]
    one = (await client.request("GET", "thirdparty/protocol/gitter", token=user)).ok()
    assert one == gitter


async def test_protocol_descriptions_are_kept(
    client: MatrixClient, bridges: tuple[CountingBridge, CountingBridge]
) -> None:
    """Many clients listing protocols cost each bridge one question at most (this
    server's first), and the merged instances do not grow from one answer to the next."""
    first = bridges[0]
    user = await client.register()
    before = [b.asked.count("protocol/gitter") for b in bridges]
    listings = await asyncio.gather(
        *(client.request("GET", "thirdparty/protocols", token=user) for _ in range(10))
    )
    (await client.request("GET", "thirdparty/protocol/gitter", token=user)).ok()
    for listing in listings:
        assert len(listing.ok()["gitter"]["instances"]) == 2
    assert [b.asked.count("protocol/gitter") - n for b, n in zip(bridges, before, strict=True)] in (
        [0, 0],
        [1, 1],
    )
    # Lookups are not kept.
    asked = first.asked.count("user/gitter")
    for _ in range(2):
        (await client.request("GET", "thirdparty/user/gitter", token=user)).ok()
    assert first.asked.count("user/gitter") == asked + 2


async def test_a_protocol_no_bridge_describes_is_404(client: MatrixClient) -> None:
    user = await client.register()
    for protocol in ("irc", "unknown"):
        answer = await client.request("GET", f"thirdparty/protocol/{protocol}", token=user)
        assert answer.status == 404, answer.body
        assert answer.body["errcode"] == "M_NOT_FOUND"


async def test_lookups_concatenate_the_valid_results(client: MatrixClient) -> None:
    user = await client.register()
    params = {"room": "matrix"}
    locations = (
        await client.request("GET", "thirdparty/location/gitter", token=user, params=params)
    ).ok()
    assert sorted(r["fields"]["room"] for r in locations) == ["matrix", "synapse"]
    users = (await client.request("GET", "thirdparty/user/gitter", token=user)).ok()
    assert users == [remote_user("alice")]
    assert (await client.request("GET", "thirdparty/user/irc", token=user)).ok() == []


async def test_reverse_lookups(client: MatrixClient) -> None:
    user = await client.register()
    alias = {"alias": f"#gitter_matrix:{SERVER_NAME}"}
    found = (await client.request("GET", "thirdparty/location", token=user, params=alias)).ok()
    assert found == [location("matrix")]
    userid = {"userid": f"@gitter_bob:{SERVER_NAME}"}
    users = (await client.request("GET", "thirdparty/user", token=user, params=userid)).ok()
    assert sorted(u["fields"]["username"] for u in users) == ["alice", "bob"]
    for kind in ("location", "user"):
        answer = await client.request("GET", f"thirdparty/{kind}", token=user)
        assert answer.status == 400, answer.body
        assert answer.body["errcode"] == "M_MISSING_PARAM"


async def test_lookups_need_a_token(client: MatrixClient) -> None:
    answer = await client.request("GET", "thirdparty/protocols")
    assert answer.status == 401, answer.body


async def public_room_ids(client: MatrixClient, body: dict[str, Any]) -> set[str]:
    chunk = (await client.request("POST", "publicRooms", body, FIRST_TOKEN)).ok()["chunk"]
    return {room["room_id"] for room in chunk}


async def test_network_room_lists(client: MatrixClient) -> None:
    user = await client.register()
    create = {"preset": "public_chat"}
    bridged = (await client.request("POST", "createRoom", create, FIRST_TOKEN)).ok()["room_id"]
    listed = {**create, "visibility": "public"}
    main = (await client.request("POST", "createRoom", listed, user)).ok()["room_id"]
    path = f"directory/list/appservice/gitter/{quote(bridged)}"
    answer = await client.request("PUT", path, {"visibility": "public"}, user)
    assert answer.status == 403, answer.body
    assert answer.body["errcode"] == "M_FORBIDDEN"
    (await client.request("PUT", path, {"visibility": "public"}, FIRST_TOKEN)).ok()

    everything = await public_room_ids(client, {"include_all_networks": True})
    assert {bridged, main} <= everything
    assert bridged not in await public_room_ids(client, {})
    assert main in await public_room_ids(client, {})
    gitter = await public_room_ids(client, {"third_party_instance_id": "first|gitter"})
    assert gitter == {bridged}
    assert await public_room_ids(client, {"third_party_instance_id": "second|gitter"}) == set()
    params = {"third_party_instance_id": "first|gitter"}
    chunk = (await client.request("GET", "publicRooms", params=params)).ok()["chunk"]
    assert [room["room_id"] for room in chunk] == [bridged]

    for bad in (
        {"third_party_instance_id": "no-separator"},
        {"third_party_instance_id": "first|gitter", "include_all_networks": True},
    ):
        answer = await client.request("POST", "publicRooms", bad, user)
        assert answer.status == 400, answer.body
        assert answer.body["errcode"] == "M_INVALID_PARAM"

    (await client.request("PUT", path, {"visibility": "private"}, FIRST_TOKEN)).ok()
    assert await public_room_ids(client, {"third_party_instance_id": "first|gitter"}) == set()
    # DELETE takes a room off the network's list as well (Synapse serves it), its own only.
    (await client.request("PUT", path, {"visibility": "public"}, FIRST_TOKEN)).ok()
    answer = await client.request("DELETE", path, token=user)
    assert (answer.status, answer.body["errcode"]) == (403, "M_FORBIDDEN")
    (await client.request("DELETE", path, token=FIRST_TOKEN)).ok()
    assert await public_room_ids(client, {"third_party_instance_id": "first|gitter"}) == set()
    answer = await client.request("PUT", path, {"visibility": "hidden"}, FIRST_TOKEN)
    assert answer.status == 400, answer.body
