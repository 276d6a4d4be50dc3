"""Peeking and previews by a guest, over HTTP on every backend (Client-Server API, "Room
Previews" / peeking_events.yaml, room_initial_sync.yaml, room_summary.yaml): a guest
reads a world-readable room it never joined, is woken by its new events, previews it,
and loses all of that when the room stops being world-readable."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

import pytest

from harness.client import Account, MatrixClient, Response, new_session
from harness.rooms import create_room, say
from harness.server import HomeserverProcess, start_homeserver
from harness.sync import LongPoll


@pytest.fixture(scope="module")
def peek_server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeserverProcess]:
    server = start_homeserver(
        backend,
        request,
        tmp_path_factory.mktemp("peeking"),
        options={"registration.open": "true", "registration.allow_guest_access": "true"},
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def peeks(peek_server: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, peek_server.base_url)


async def _guest(client: MatrixClient) -> Account:
    body = (await client.request("POST", "register", json={}, params={"kind": "guest"})).ok()
    return Account(body["user_id"], body["access_token"], body["device_id"], "")


async def _visibility(client: MatrixClient, room_id: str, owner: Account, value: str) -> None:
    content = {"history_visibility": value}
    path = f"rooms/{quote(room_id)}/state/m.room.history_visibility"
    (await client.request("PUT", path, json=content, token=owner)).ok()


async def _events(
    client: MatrixClient, guest: Account, room_id: str, since: str | None, timeout_ms: int
) -> Response:
    params = {"room_id": room_id, "timeout": str(timeout_ms)}
    if since is not None:
        params["from"] = since
    return await client.request("GET", "events", token=guest, params=params)


async def test_a_guest_peeks_into_a_world_readable_room(peeks: MatrixClient) -> None:
    owner, guest = await peeks.register(), await _guest(peeks)
    room_id = await create_room(peeks, owner, preset="public_chat", name="Open house")
    await _visibility(peeks, room_id, owner, "world_readable")
    first = await say(peeks, room_id, owner, "welcome")

    initial = (await peeks.request("GET", f"rooms/{quote(room_id)}/initialSync", token=guest)).ok()
    assert first in [e["event_id"] for e in initial["messages"]["chunk"]]
    assert ("m.room.name", "") in {(e["type"], e["state_key"]) for e in initial["state"]}
    assert "membership" not in initial

    # /events with room_id waits for the room's next event, then returns it.
    start = (await _events(peeks, guest, room_id, None, 0)).ok()["end"]
    poll = await LongPoll.start(_events(peeks, guest, room_id, start, 10_000), 10)
    poll.assert_waiting()
    second = await say(peeks, room_id, owner, "anyone there?")
    woken = (await poll.woken()).ok()
    assert [e["event_id"] for e in woken["chunk"]] == [second]

    preview = await peeks.request(
        "GET", f"/_matrix/client/v1/room_summary/{quote(room_id)}", token=guest
    )
    assert preview.ok()["name"] == "Open house" and preview.ok()["membership"] == "leave"
    # Jump to date is for members' clients: guests are refused it, as by Synapse.
    jump = await peeks.request(
        "GET",
        f"/_matrix/client/v1/rooms/{quote(room_id)}/timestamp_to_event",
        token=guest,
        params={"ts": "0", "dir": "f"},
    )
    assert jump.status == 403 and jump.body["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"

    # No longer world-readable: the peek ends.
    await _visibility(peeks, room_id, owner, "shared")
    for response in (
        await _events(peeks, guest, room_id, woken["end"], 0),
        await peeks.request("GET", f"rooms/{quote(room_id)}/initialSync", token=guest),
    ):
        assert response.status == 403 and response.body["errcode"] == "M_FORBIDDEN"
