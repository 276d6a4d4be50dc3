"""Appservices asked about users and aliases nobody has yet, over HTTP on every backend
(Application Service API, "Querying"), and exclusive alias namespaces.

The appservice is a real loopback one that behaves as a bridge: asked about a ghost it
knows, it registers the ghost (and sets its display name) before answering 200; asked
about a portal alias it knows, it creates the room with that alias. So a profile read,
an invite, an alias lookup or a join by alias of something in its namespace succeeds on
first use; anything it does not know stays 404, and is asked once while the "no" is
kept. An exclusive alias namespace is the appservice's alone (M_EXCLUSIVE for others),
and an appservice cannot create aliases outside its namespaces."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

from harness.appservice import RecordingAppService, write_registration
from harness.client import Account, MatrixClient, new_session
from harness.ports import free_port
from harness.server import SERVER_NAME, HomeserverProcess, start_homeserver

AS_TOKEN = "as-token-queries-bridge"
HS_TOKEN = "hs-token-queries-bridge"
RESERVED_TOKEN = "as-token-queries-reserved"
WATCHER_TOKEN = "as-token-queries-watcher"
GONE_TOKEN = "as-token-queries-gone"
GHOST_NAME = "A bridged ghost"
_names = itertools.count()


def ghost(prefix: str = "ghost") -> str:
    return f"@{prefix}_{next(_names)}:{SERVER_NAME}"


def portal(prefix: str = "bridged") -> str:
    return f"#{prefix}_{next(_names)}:{SERVER_NAME}"


def localpart(identifier: str) -> str:
    return identifier[1:].split(":", 1)[0]


@dataclass
class BridgeAppService(RecordingAppService):
    """Creates the ghosts and portals it knows when asked about them, as a bridge does."""

    homeserver_url: str = ""

    async def _as_bridge(self, method: str, path: str, body: Any, **params: str) -> None:
        async with new_session() as session:
            client = MatrixClient(session, self.homeserver_url)
            (await client.request(method, path, body, AS_TOKEN, params=params)).ok()

    async def _user(self, request: web.Request) -> web.Response:
        user_id = request.match_info["user_id"]
        if self._authorised(request) and user_id in self.known_users:
            register = {"type": "m.login.application_service", "username": localpart(user_id)}
            await self._as_bridge("POST", "register", {**register, "inhibit_login": True})
            path = f"profile/{quote(user_id)}/displayname"
            await self._as_bridge("PUT", path, {"displayname": GHOST_NAME}, user_id=user_id)
        return await super()._user(request)

    async def _alias(self, request: web.Request) -> web.Response:
        alias = request.match_info["alias"]
        if self._authorised(request) and alias in self.known_aliases:
            body = {"room_alias_name": localpart(alias), "preset": "public_chat"}
            await self._as_bridge("POST", "createRoom", body)
        return await super()._alias(request)


@pytest.fixture(scope="module")
async def bridge() -> AsyncIterator[BridgeAppService]:
    appservice = BridgeAppService(HS_TOKEN)
    await appservice.start()
    try:
        yield appservice
    finally:
        await appservice.stop()


@pytest.fixture(scope="module")
def queries_homeserver(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    bridge: BridgeAppService,
) -> Iterator[HomeserverProcess]:
    """``bridge`` (ghosts ``@ghost_*``, portals ``#bridged_*``, both exclusive),
    ``reserved`` (exclusive ``#reserved_*``, no URL), ``gone`` (``@gone_*``, at a port
    nothing listens on) and ``watcher`` (no URL, users ``@watched_*`` not exclusive,
    aliases ``#watched_*`` exclusive)."""
    data_dir = tmp_path_factory.mktemp("appservice-queries")
    files = [
        write_registration(
            data_dir / "bridge.yaml",
            appservice_id="bridge",
            url=bridge.url,
            as_token=AS_TOKEN,
            hs_token=HS_TOKEN,
            sender_localpart="querybridgebot",
            user_regex=f"@ghost_.*:{SERVER_NAME}",
            alias_regex=f"#bridged_.*:{SERVER_NAME}",
        ),
        write_registration(
            data_dir / "reserved.yaml",
            appservice_id="reserved",
            url=None,
            as_token=RESERVED_TOKEN,
            hs_token="hs-token-queries-reserved",
            sender_localpart="reservedbot",
            user_regex=f"@reserved_.*:{SERVER_NAME}",
            alias_regex=f"#reserved_.*:{SERVER_NAME}",
        ),
        write_registration(
            data_dir / "gone.yaml",
            appservice_id="gone",
            url=f"http://127.0.0.1:{free_port()}",
            as_token=GONE_TOKEN,
            hs_token="hs-token-queries-gone",
            sender_localpart="gonebot",
            user_regex=f"@gone_.*:{SERVER_NAME}",
        ),
        write_registration(
            data_dir / "watcher.yaml",
            appservice_id="watcher",
            url=None,
            as_token=WATCHER_TOKEN,
            hs_token="hs-token-queries-watcher",
            sender_localpart="watcherbot",
            user_regex="",
            namespaces={
                "users": [{"exclusive": False, "regex": f"@watched_.*:{SERVER_NAME}"}],
                "aliases": [{"exclusive": True, "regex": f"#watched_.*:{SERVER_NAME}"}],
            },
        ),
    ]
    options = {"app_service_config_files": "[" + ", ".join(f'"{f}"' for f in files) + "]"}
    server = start_homeserver(backend, request, data_dir / "server", options=options)
    bridge.homeserver_url = server.base_url
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def client(queries_homeserver: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, queries_homeserver.base_url)


async def new_room(client: MatrixClient, owner: Account) -> str:
    room_id: str = (await client.request("POST", "createRoom", {}, owner)).ok()["room_id"]
    return room_id


async def test_profile_of_an_unknown_ghost_is_asked_of_its_bridge(
    client: MatrixClient, bridge: BridgeAppService
) -> None:
    user = await client.register()
    user_id = ghost()
    bridge.known_users.add(user_id)
    profile = (await client.request("GET", f"profile/{quote(user_id)}", token=user)).ok()
    assert profile == {"displayname": GHOST_NAME}
    assert bridge.queried_users.count(user_id) == 1
    # Now the ghost exists: nothing more to ask.
    (await client.request("GET", f"profile/{quote(user_id)}/displayname", token=user)).ok()
    assert bridge.queried_users.count(user_id) == 1


async def test_a_ghost_the_bridge_does_not_know_is_404_and_asked_once(
    client: MatrixClient, bridge: BridgeAppService
) -> None:
    user = await client.register()
    user_id = ghost()
    for _ in range(3):
        answer = await client.request("GET", f"profile/{quote(user_id)}", token=user)
        assert answer.status == 404, answer.body
        assert answer.body["errcode"] == "M_NOT_FOUND"
    assert bridge.queried_users.count(user_id) == 1


async def test_users_outside_every_namespace_and_the_bot_are_not_asked(
    client: MatrixClient, bridge: BridgeAppService
) -> None:
    user = await client.register()
    stranger = f"@stranger_{next(_names)}:{SERVER_NAME}"
    bot = f"@querybridgebot:{SERVER_NAME}"
    assert (await client.request("GET", f"profile/{quote(stranger)}", token=user)).status == 404
    (await client.request("GET", f"profile/{quote(bot)}", token=user)).ok()
    assert stranger not in bridge.queried_users
    assert bot not in bridge.queried_users


async def test_a_bridge_that_cannot_be_reached_leaves_the_user_unknown(
    client: MatrixClient,
) -> None:
    user = await client.register()
    user_id = ghost("gone")
    answer = await client.request("GET", f"profile/{quote(user_id)}", token=user)
    assert answer.status == 404, answer.body


async def test_an_invited_ghost_is_created_before_the_invite(
    client: MatrixClient, bridge: BridgeAppService
) -> None:
    user = await client.register()
    room_id = await new_room(client, user)
    user_id = ghost()
    bridge.known_users.add(user_id)
    invite = {"user_id": user_id}
    (await client.request("POST", f"rooms/{quote(room_id)}/invite", invite, user)).ok()
    path = f"rooms/{quote(room_id)}/state/m.room.member/{quote(user_id)}"
    member = (await client.request("GET", path, token=user)).ok()
    assert member == {"membership": "invite", "displayname": GHOST_NAME}
    assert bridge.queried_users.count(user_id) == 1


async def test_an_unknown_portal_alias_is_asked_of_its_bridge(
    client: MatrixClient, bridge: BridgeAppService
) -> None:
    user = await client.register()
    alias = portal()
    bridge.known_aliases.add(alias)
    found = (await client.request("GET", f"directory/room/{quote(alias)}", token=user)).ok()
    assert found["servers"] == [SERVER_NAME]
    state = f"rooms/{quote(found['room_id'])}/state/m.room.canonical_alias"
    assert (await client.request("GET", state, token=AS_TOKEN)).ok() == {"alias": alias}
    assert bridge.queried_aliases.count(alias) == 1


async def test_a_join_by_an_unknown_portal_alias(
    client: MatrixClient, bridge: BridgeAppService
) -> None:
    user = await client.register()
    alias = portal()
    bridge.known_aliases.add(alias)
    joined = (await client.request("POST", f"join/{quote(alias)}", {}, user)).ok()
    rooms = (await client.request("GET", "joined_rooms", token=user)).ok()
    assert joined["room_id"] in rooms["joined_rooms"]


async def test_a_portal_the_bridge_does_not_know_is_404_and_asked_once(
    client: MatrixClient, bridge: BridgeAppService
) -> None:
    user = await client.register()
    alias = portal()
    for path in (f"directory/room/{quote(alias)}", f"directory/room/{quote(alias)}"):
        answer = await client.request("GET", path, token=user)
        assert answer.status == 404, answer.body
    answer = await client.request("POST", f"join/{quote(alias)}", {}, user)
    assert answer.status == 404, answer.body
    assert bridge.queried_aliases.count(alias) == 1
    # An alias outside every namespace is not asked about.
    plain = f"#plain_{next(_names)}:{SERVER_NAME}"
    assert (await client.request("GET", f"directory/room/{quote(plain)}")).status == 404
    assert plain not in bridge.queried_aliases


async def test_an_exclusive_alias_is_only_its_appservices(client: MatrixClient) -> None:
    user = await client.register()
    room_id = await new_room(client, user)
    body = {"room_id": room_id}
    for alias in (portal(), portal("reserved")):
        answer = await client.request("PUT", f"directory/room/{quote(alias)}", body, user)
        assert answer.status == 400, answer.body
        assert answer.body["errcode"] == "M_EXCLUSIVE"
    # The bridge may, in its namespace, without being in the room; not elsewhere.
    alias = portal()
    (await client.request("PUT", f"directory/room/{quote(alias)}", body, AS_TOKEN)).ok()
    for elsewhere in (portal("reserved"), f"#plain_{next(_names)}:{SERVER_NAME}"):
        path = f"directory/room/{quote(elsewhere)}"
        answer = await client.request("PUT", path, body, AS_TOKEN)
        assert answer.status == 400, answer.body
        assert answer.body["errcode"] == "M_EXCLUSIVE"
    # The room's creator may not delete the bridge's alias; the bridge may.
    answer = await client.request("DELETE", f"directory/room/{quote(alias)}", token=user)
    assert answer.status == 400, answer.body
    assert answer.body["errcode"] == "M_EXCLUSIVE"
    (await client.request("DELETE", f"directory/room/{quote(alias)}", token=AS_TOKEN)).ok()
    # Outside every exclusive namespace, aliases are anyone's as before.
    plain = f"#plain_{next(_names)}:{SERVER_NAME}"
    (await client.request("PUT", f"directory/room/{quote(plain)}", body, user)).ok()


async def test_create_room_with_an_exclusive_alias_name(client: MatrixClient) -> None:
    """Refused before any room is created (as Synapse checks it); the appservice may."""
    user = await client.register()
    body = {"room_alias_name": localpart(portal("reserved"))}
    answer = await client.request("POST", "createRoom", body, user)
    assert answer.status == 400, answer.body
    assert answer.body["errcode"] == "M_EXCLUSIVE"
    assert (await client.request("GET", "joined_rooms", token=user)).ok()["joined_rooms"] == []
    alias = portal()
    body = {"room_alias_name": localpart(alias)}
    room_id = (await client.request("POST", "createRoom", body, AS_TOKEN)).ok()["room_id"]
    found = (await client.request("GET", f"directory/room/{quote(alias)}", token=user)).ok()
    assert found["room_id"] == room_id


async def test_only_the_owning_appservice_gives_a_new_room_an_exclusive_alias(
    client: MatrixClient,
) -> None:
    """An ordinary user in the owner's non-exclusive user namespace is refused, and an
    appservice outside its own alias namespaces too (Synapse's ``create_association``);
    the owner's bot, and a ghost its appservice acts as, may."""
    watched = await client.register(f"watched_{next(_names)}")
    refusals: list[tuple[str | Account, str]] = [
        (watched, f"watched_{next(_names)}"),
        (AS_TOKEN, f"watched_{next(_names)}"),
        (AS_TOKEN, f"plain_{next(_names)}"),
    ]
    for token, name in refusals:
        answer = await client.request("POST", "createRoom", {"room_alias_name": name}, token)
        assert answer.status == 400, answer.body
        assert answer.body["errcode"] == "M_EXCLUSIVE"
        alias = f"#{name}:{SERVER_NAME}"
        assert (await client.request("GET", f"directory/room/{quote(alias)}")).status == 404
    assert (await client.request("GET", "joined_rooms", token=watched)).ok()["joined_rooms"] == []
    name = f"watched_{next(_names)}"
    (await client.request("POST", "createRoom", {"room_alias_name": name}, WATCHER_TOKEN)).ok()
    user_id = ghost()
    register = {"type": "m.login.application_service", "username": localpart(user_id)}
    body = {**register, "inhibit_login": True}
    (await client.request("POST", "register", body, AS_TOKEN)).ok()
    alias = portal()
    body = {"room_alias_name": localpart(alias)}
    params = {"user_id": user_id}
    created = await client.request("POST", "createRoom", body, AS_TOKEN, params=params)
    found = (await client.request("GET", f"directory/room/{quote(alias)}")).ok()
    assert found["room_id"] == created.ok()["room_id"]
    # PUT and DELETE /directory/room follow the same rule.
    path = f"directory/room/{quote(f'#watched_{next(_names)}:{SERVER_NAME}')}"
    answer = await client.request("PUT", path, {"room_id": found["room_id"]}, watched)
    assert answer.status == 400, answer.body
    assert answer.body["errcode"] == "M_EXCLUSIVE"
