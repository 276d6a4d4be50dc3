"""FederationTransport: each endpoint's method, path (every parameter percent-encoded on its
own), query, body and signing, over a recording fake of the signed client."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from peyvand.federation.client import FederationClient, Query
from peyvand.federation.transport import KEY_QUERY_PATH, KEY_SERVER_PATH, FederationTransport
from peyvand.types import EventID, RoomAlias, RoomID, ServerName, UserID

ROOM = RoomID("!room/1:remote.test")
USER = UserID("@us?er:remote.test")
EVENT = EventID("$ev/en#t")


@dataclass
class Call:
    method: str
    destination: str
    path: str
    query: Query | None
    body: Any
    signed: bool
    timeout: float | None


@dataclass
class RecordingClient:
    """``get_json``, ``post_json`` and ``put_json`` of ``FederationClient``, recorded."""

    answer: Any = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    async def get_json(self, destination: str, path: str, **options: Any) -> Any:
        return self._record("GET", destination, path, None, **options)

    async def post_json(self, destination: str, path: str, body: Any, **options: Any) -> Any:
        return self._record("POST", destination, path, body, **options)

    async def put_json(self, destination: str, path: str, body: Any, **options: Any) -> Any:
        return self._record("PUT", destination, path, body, **options)

    def _record(
        self,
        method: str,
        destination: str,
        path: str,
        body: Any,
        *,
        query: Query | None = None,
        signed: bool = True,
        timeout: float | None = None,
    ) -> Any:
        self.calls.append(Call(method, destination, path, query, body, signed, timeout))
        return self.answer


@pytest.fixture
def client() -> RecordingClient:
    return RecordingClient()


@pytest.fixture
def transport(client: RecordingClient) -> FederationTransport:
    return FederationTransport(cast(FederationClient, client))


def only(client: RecordingClient) -> Call:
    assert len(client.calls) == 1
    return client.calls[0]


async def test_send_transaction(client: RecordingClient, transport: FederationTransport) -> None:
    client.answer = {"pdus": {}}
    body = {"origin": "local.test", "origin_server_ts": 1, "pdus": [], "edus": []}
    assert await transport.send_transaction(
        ServerName("remote.test"), "17.4/2", body, timeout=5
    ) == {"pdus": {}}
    assert only(client) == Call(
        "PUT", "remote.test", "/_matrix/federation/v1/send/17.4%2F2", None, body, True, 5
    )


async def test_key_requests_are_unsigned(
    client: RecordingClient, transport: FederationTransport
) -> None:
    await transport.get_server_keys(ServerName("remote.test"))
    await transport.query_server_keys(ServerName("notary.test"), {"server_keys": {}})
    assert client.calls == [
        Call("GET", "remote.test", KEY_SERVER_PATH, None, None, False, None),
        Call("POST", "notary.test", KEY_QUERY_PATH, None, {"server_keys": {}}, False, None),
    ]
    assert KEY_SERVER_PATH == "/_matrix/key/v2/server"
    assert KEY_QUERY_PATH == "/_matrix/key/v2/query"


async def test_membership_handshakes(
    client: RecordingClient, transport: FederationTransport
) -> None:
    pdu = {"type": "m.room.member"}
    await transport.make_join(ServerName("r.test"), ROOM, USER, {"10": None, "11": None})
    await transport.send_join(ServerName("r.test"), ROOM, EVENT, pdu)
    await transport.make_leave(ServerName("r.test"), ROOM, USER)
    await transport.send_leave(ServerName("r.test"), ROOM, EVENT, pdu)
    await transport.make_knock(ServerName("r.test"), ROOM, USER, ["11"])
    await transport.send_knock(ServerName("r.test"), ROOM, EVENT, pdu)
    await transport.invite(ServerName("r.test"), ROOM, EVENT, {"event": pdu})
    room, user, event = "%21room%2F1%3Aremote.test", "%40us%3Fer%3Aremote.test", "%24ev%2Fen%23t"
    v1, v2 = "/_matrix/federation/v1", "/_matrix/federation/v2"
    assert [(c.method, c.path, c.query, c.body, c.signed) for c in client.calls] == [
        ("GET", f"{v1}/make_join/{room}/{user}", {"ver": ["10", "11"]}, None, True),
        ("PUT", f"{v2}/send_join/{room}/{event}", None, pdu, True),
        ("GET", f"{v1}/make_leave/{room}/{user}", None, None, True),
        ("PUT", f"{v2}/send_leave/{room}/{event}", None, pdu, True),
        ("GET", f"{v1}/make_knock/{room}/{user}", {"ver": ["11"]}, None, True),
        ("PUT", f"{v1}/send_knock/{room}/{event}", None, pdu, True),
        ("PUT", f"{v2}/invite/{room}/{event}", None, {"event": pdu}, True),
    ]


async def test_queries(client: RecordingClient, transport: FederationTransport) -> None:
    await transport.query_directory(ServerName("r.test"), RoomAlias("#a:r.test"))
    await transport.query_profile(ServerName("r.test"), USER, timeout=10)
    await transport.get_user_devices(ServerName("r.test"), USER, timeout=10)
    await transport.claim_keys(ServerName("r.test"), {"one_time_keys": {}}, timeout=10)
    v1 = "/_matrix/federation/v1"
    assert client.calls == [
        Call(
            "GET", "r.test", f"{v1}/query/directory", {"room_alias": "#a:r.test"}, None, True, None
        ),
        Call("GET", "r.test", f"{v1}/query/profile", {"user_id": USER}, None, True, 10),
        Call("GET", "r.test", f"{v1}/user/devices/%40us%3Fer%3Aremote.test", None, None, True, 10),
        Call("POST", "r.test", f"{v1}/user/keys/claim", None, {"one_time_keys": {}}, True, 10),
    ]


async def test_public_rooms_get_without_filter_post_with_one(
    client: RecordingClient, transport: FederationTransport
) -> None:
    common: Mapping[str, Any] = {"include_all_networks": False, "timeout": 10}
    await transport.public_rooms(
        ServerName("r.test"),
        limit=5,
        since="t1",
        search_filter=None,
        third_party_instance_id="x",
        **common,
    )
    await transport.public_rooms(
        ServerName("r.test"),
        limit=None,
        since=None,
        search_filter={"generic_search_term": "a"},
        third_party_instance_id=None,
        **common,
    )
    path = "/_matrix/federation/v1/publicRooms"
    assert client.calls == [
        Call(
            "GET",
            "r.test",
            path,
            {
                "include_all_networks": "false",
                "third_party_instance_id": "x",
                "limit": "5",
                "since": "t1",
            },
            None,
            True,
            10,
        ),
        Call(
            "POST",
            "r.test",
            path,
            None,
            {"include_all_networks": False, "filter": {"generic_search_term": "a"}},
            True,
            10,
        ),
    ]


async def test_event_fetches(client: RecordingClient, transport: FederationTransport) -> None:
    v1 = "/_matrix/federation/v1"
    client.answer = {"pdus": [{"a": 1}], "events": [{"b": 2}]}
    assert await transport.get_event(ServerName("r.test"), EVENT) == {"a": 1}
    assert await transport.backfill(ServerName("r.test"), ROOM, [EVENT], 10) == [{"a": 1}]
    assert await transport.get_missing_events(ServerName("r.test"), ROOM, [EVENT], [], 10, 0) == [
        {"b": 2}
    ]
    client.answer = {"pdu_ids": ["$s"], "auth_chain_ids": ["$a", 1]}
    assert await transport.get_state_ids(ServerName("r.test"), ROOM, EVENT) == (["$s"], ["$a"])
    room = "%21room%2F1%3Aremote.test"
    assert [(c.method, c.path, c.query, c.body) for c in client.calls] == [
        ("GET", f"{v1}/event/%24ev%2Fen%23t", None, None),
        ("GET", f"{v1}/backfill/{room}", {"v": [EVENT], "limit": "10"}, None),
        (
            "POST",
            f"{v1}/get_missing_events/{room}",
            None,
            {"earliest_events": [EVENT], "latest_events": [], "limit": 10, "min_depth": 0},
        ),
        ("GET", f"{v1}/state_ids/{room}", {"event_id": EVENT}, None),
    ]


async def test_malformed_event_answers(
    client: RecordingClient, transport: FederationTransport
) -> None:
    client.answer = {"pdus": [{}, {}]}
    with pytest.raises(ValueError, match="expected one PDU"):
        await transport.get_event(ServerName("r.test"), EVENT)
    client.answer = []
    assert await transport.backfill(ServerName("r.test"), ROOM, [EVENT], 10) == []
    assert await transport.get_missing_events(ServerName("r.test"), ROOM, [], [EVENT], 10, 0) == []
    with pytest.raises(ValueError, match="state_ids"):
        await transport.get_state_ids(ServerName("r.test"), ROOM, EVENT)
