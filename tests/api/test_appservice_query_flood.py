"""A flood of user queries does not delay an appservice's transactions (Application
Service API, "Querying" and "Pushing events"), over HTTP on every backend.

The bridge takes its time to answer user queries (as one asking its remote network
would), and anyone, even without an access token, can make the homeserver ask it about
a new random ghost by reading its profile. Transactions have their own connections, so
a message still reaches the bridge at once; at most ``QUERIES_PER_APPSERVICE`` questions
are put to it at a time, the others answered "unknown" (404) after a short wait."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest
from aiohttp import web

from harness.appservice import RecordingAppService, write_registration
from harness.client import MatrixClient, Response, new_session
from harness.server import SERVER_NAME, HomeserverProcess, start_homeserver

HS_TOKEN = "hs-token-query-flood"
# QUERIES_PER_APPSERVICE in peyvand.services.appservice.queries.
QUERIES_AT_ONCE = 4
FLOOD = 20
_names = itertools.count()


@dataclass
class SlowBridge(RecordingAppService):
    """Holds every user query until ``release`` is set (at most 30 s)."""

    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def _user(self, request: web.Request) -> web.Response:
        self.queried_users.append(request.match_info["user_id"])
        self._touch()
        try:
            async with asyncio.timeout(30):
                await self.release.wait()
        except TimeoutError:
            pass
        return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)


@pytest.fixture(scope="module")
async def bridge() -> AsyncIterator[SlowBridge]:
    appservice = SlowBridge(HS_TOKEN)
    await appservice.start()
    try:
        yield appservice
    finally:
        appservice.release.set()
        await appservice.stop()


@pytest.fixture(scope="module")
def flood_homeserver(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    bridge: SlowBridge,
) -> Iterator[HomeserverProcess]:
    """The bridge has ghosts ``@flood_*`` (exclusive) and watches users ``@watched_*``
    (so their messages go to it)."""
    data_dir = tmp_path_factory.mktemp("appservice-query-flood")
    registration = write_registration(
        data_dir / "bridge.yaml",
        appservice_id="flood",
        url=bridge.url,
        as_token="as-token-query-flood",
        hs_token=HS_TOKEN,
        sender_localpart="floodbot",
        user_regex="",
        namespaces={
            "users": [
                {"exclusive": True, "regex": f"@flood_.*:{SERVER_NAME}"},
                {"exclusive": False, "regex": f"@watched_.*:{SERVER_NAME}"},
            ],
        },
    )
    options = {"app_service_config_files": f'["{registration}"]'}
    server = start_homeserver(backend, request, data_dir / "server", options=options)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def client(flood_homeserver: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, flood_homeserver.base_url)


async def _delivery_time(client: MatrixClient, bridge: SlowBridge, token: str, room: str) -> float:
    """Seconds from sending a message until the bridge's transaction holds it."""
    path = f"rooms/{quote(room)}/send/m.room.message/{next(_names)}"
    started = time.monotonic()
    sent = await client.request("PUT", path, {"msgtype": "m.text", "body": "hi"}, token)
    event_id = sent.ok()["event_id"]
    await bridge.wait_for(lambda b: any(e["event_id"] == event_id for e in b.events), limit=15)
    return time.monotonic() - started


async def test_transactions_do_not_wait_behind_user_queries(
    client: MatrixClient, bridge: SlowBridge
) -> None:
    bridge.transactions.clear()  # another backend's server numbers its own from 1 too
    user = await client.register(f"watched_{next(_names)}")
    room = (await client.request("POST", "createRoom", {}, user)).ok()["room_id"]
    baseline = await _delivery_time(client, bridge, user.access_token, room)

    async def profile(index: int) -> Response:
        ghost = f"@flood_{next(_names)}_{index}:{SERVER_NAME}"
        return await client.request("GET", f"profile/{quote(ghost)}")

    queried = len(bridge.queried_users)
    flood = [asyncio.ensure_future(profile(i)) for i in range(FLOOD)]
    try:
        await bridge.wait_for(lambda b: len(b.queried_users) - queried >= QUERIES_AT_ONCE)
        delayed = await _delivery_time(client, bridge, user.access_token, room)
        assert delayed < baseline + 2.0, (baseline, delayed)
        # The questions over the limit are answered "unknown" without reaching the bridge.
        done, _ = await asyncio.wait(flood, timeout=5)
        assert len(done) == FLOOD - QUERIES_AT_ONCE
        assert all(task.result().status == 404 for task in done)
        assert len(bridge.queried_users) - queried == QUERIES_AT_ONCE
    finally:
        bridge.release.set()
        answers = await asyncio.gather(*flood)
        bridge.release.clear()
    assert [a.status for a in answers] == [404] * FLOOD
