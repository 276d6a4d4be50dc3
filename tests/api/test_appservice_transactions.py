"""Events pushed to application services, over HTTP on every backend (Application
Service API, "Pushing events"): a real recording appservice receives the events of the
rooms it is interested in, in order and once; a failing one gets everything, unchanged
under each transaction ID, once it recovers; one down delays no other; nothing is lost
across a ``kill -9`` of the server while the appservice is down."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

from harness.admin import login_admin
from harness.appservice import RecordingAppService, write_registration
from harness.client import Account, MatrixClient, new_session
from harness.fake_server import FEDERATION_V2, FakeServer, q
from harness.server import SERVER_NAME, HomeserverProcess, new_homeserver, start_homeserver

_txn = itertools.count()
# Bound of every wait for a transaction (the first retries come after 1 s and 2 s).
WAIT = 20.0


@dataclass
class AttemptsAppService(RecordingAppService):
    """A recording appservice that also keeps every transaction attempt, failed ones and
    repeats included, with its body."""

    attempts: list[tuple[str, Any]] = field(default_factory=list)

    async def _transaction(self, request: web.Request) -> web.Response:
        if self._authorised(request):
            self.attempts.append((request.match_info["txn_id"], await request.json()))
        return await super()._transaction(request)


@dataclass
class Bridge:
    appservice: AttemptsAppService
    as_token: str
    bot: str


def bridge(name: str) -> Bridge:
    return Bridge(AttemptsAppService(f"hs-{name}"), f"as-{name}", f"@{name}bot:{SERVER_NAME}")


def register(data_dir: Path, name: str, target: Bridge, *, listening: bool = True) -> Path:
    """The registration of ``target``: users ``@<name>_...`` and aliases ``#<name>_...``,
    not exclusive (ordinary users may take such aliases); without a url unless
    ``listening``."""
    return write_registration(
        data_dir / f"{name}.yaml",
        appservice_id=name,
        url=target.appservice.url if listening else None,
        as_token=target.as_token,
        hs_token=target.appservice.hs_token,
        sender_localpart=f"{name}bot",
        user_regex=f"@{name}_.*:{SERVER_NAME}",
        alias_regex=f"#{name}_.*:{SERVER_NAME}",
        exclusive=False,
    )


async def start_server(
    backend: str,
    request: pytest.FixtureRequest,
    data_dir: Path,
    bridges: dict[str, Bridge],
    *,
    silent: tuple[str, ...] = (),
) -> HomeserverProcess:
    """A server with ``bridges`` registered, those named in ``silent`` without a url."""
    files = [register(data_dir, n, b, listening=n not in silent) for n, b in bridges.items()]
    options = {"app_service_config_files": "[" + ", ".join(f'"{f}"' for f in files) + "]"}
    # In a thread: the appservices answer on this loop meanwhile.
    return await asyncio.to_thread(
        start_homeserver, backend, request, data_dir / "server", options=options
    )


@dataclass
class World:
    server: HomeserverProcess
    alpha: Bridge
    beta: Bridge


@pytest.fixture(scope="module")
async def world(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    """A server with two appservices, ``alpha`` and ``beta``, each listening."""
    alpha, beta = bridge("alpha"), bridge("beta")
    await alpha.appservice.start()
    await beta.appservice.start()
    data_dir = tmp_path_factory.mktemp("appservice-transactions")
    server = await start_server(backend, request, data_dir, {"alpha": alpha, "beta": beta})
    try:
        yield World(server, alpha, beta)
    finally:
        await asyncio.to_thread(server.stop)
        await alpha.appservice.stop()
        await beta.appservice.stop()


@pytest.fixture
async def client(world: World) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, world.server.base_url)


async def room_with(client: MatrixClient, owner: Account, *bots: Bridge) -> str:
    """A room of ``owner`` that each bot in ``bots`` was invited to and joined."""
    room_id: str = (await client.request("POST", "createRoom", {}, owner)).ok()["room_id"]
    for b in bots:
        path = f"rooms/{quote(room_id)}"
        (await client.request("POST", f"{path}/invite", {"user_id": b.bot}, owner)).ok()
        (await client.request("POST", f"{path}/join", {}, b.as_token)).ok()
    return room_id


async def send(client: MatrixClient, sender: Account, room_id: str, count: int) -> list[str]:
    """``count`` messages, one after the other; their event IDs in order."""
    sent = []
    for i in range(count):
        path = f"rooms/{quote(room_id)}/send/m.room.message/t{next(_txn)}"
        content = {"msgtype": "m.text", "body": f"message {i}"}
        sent.append((await client.request("PUT", path, content, sender)).ok()["event_id"])
    return sent


def received(appservice: RecordingAppService, room_id: str) -> list[dict[str, Any]]:
    return [e for e in appservice.events if e.get("room_id") == room_id]


def received_ids(appservice: RecordingAppService, room_id: str) -> list[str]:
    return [e["event_id"] for e in received(appservice, room_id)]


async def wait_for_events(
    appservice: RecordingAppService, room_id: str, event_ids: list[str], limit: float = WAIT
) -> None:
    wanted = set(event_ids)
    await appservice.wait_for(lambda a: wanted <= set(received_ids(a, room_id)), limit)


async def wait_for_bot(target: Bridge, room_id: str) -> None:
    """Until the bot's join in ``room_id`` has reached its appservice."""

    def joined(appservice: RecordingAppService) -> bool:
        return any(
            e.get("state_key") == target.bot and e["content"].get("membership") == "join"
            for e in received(appservice, room_id)
        )

    await target.appservice.wait_for(joined, WAIT)


def assert_in_order_once(appservice: RecordingAppService, room_id: str, sent: list[str]) -> None:
    ids = received_ids(appservice, room_id)
    assert len(ids) == len(set(ids)), f"an event arrived twice: {ids}"
    assert [i for i in ids if i in set(sent)] == sent


def assert_ids_kept_their_content(appservice: AttemptsAppService) -> None:
    """Every attempt of one transaction ID carried the same body; bodies of different
    IDs hold different events."""
    bodies: dict[str, Any] = {}
    for txn_id, body in appservice.attempts:
        assert bodies.setdefault(txn_id, body) == body, f"transaction {txn_id} changed"
    events = [e["event_id"] for body in bodies.values() for e in body["events"]]
    assert len(events) == len(set(events))


async def test_a_message_in_a_room_with_the_bot_reaches_it_once_in_order(
    world: World, client: MatrixClient
) -> None:
    alice = await client.register()
    room_id = await room_with(client, alice, world.alpha)
    sent = await send(client, alice, room_id, 5)
    await wait_for_events(world.alpha.appservice, room_id, sent)
    assert_in_order_once(world.alpha.appservice, room_id, sent)
    events = received(world.alpha.appservice, room_id)
    # The bot's invite and join came first; everything in the client format.
    memberships = [(e["state_key"], e["content"]["membership"]) for e in events[:2]]
    assert memberships == [(world.alpha.bot, "invite"), (world.alpha.bot, "join")]
    message = events[-1]
    assert message["sender"] == alice.user_id
    assert message["content"] == {"msgtype": "m.text", "body": "message 4"}
    assert isinstance(message["unsigned"]["age"], int)
    assert "signatures" not in message and "hashes" not in message
    assert_ids_kept_their_content(world.alpha.appservice)


async def test_interest_follows_the_namespace_users_joined(
    world: World, client: MatrixClient
) -> None:
    """A room the bot is not in: its events go to the appservice while one of its
    namespace users is joined, and stop when that user leaves."""
    alpha = world.alpha
    alice = await client.register()
    ghost = (
        await client.request(
            "POST",
            "register",
            {"type": "m.login.application_service", "username": f"alpha_g{next(_txn)}"},
            alpha.as_token,
        )
    ).ok()["user_id"]
    room_id = (await client.request("POST", "createRoom", {"preset": "public_chat"}, alice)).ok()[
        "room_id"
    ]
    as_ghost = {"user_id": ghost}
    path = f"rooms/{quote(room_id)}"
    (await client.request("POST", f"{path}/join", {}, alpha.as_token, as_ghost)).ok()
    while_joined = await send(client, alice, room_id, 2)
    (await client.request("POST", f"{path}/leave", {}, alpha.as_token, as_ghost)).ok()
    after_leaving = await send(client, alice, room_id, 2)
    (await client.request("POST", f"{path}/join", {}, alpha.as_token, as_ghost)).ok()
    rejoined = await send(client, alice, room_id, 1)
    await wait_for_events(alpha.appservice, room_id, rejoined)
    assert_in_order_once(alpha.appservice, room_id, while_joined + rejoined)
    assert not set(after_leaving) & set(received_ids(alpha.appservice, room_id))
    memberships = [
        (e["state_key"], e["content"]["membership"])
        for e in received(alpha.appservice, room_id)
        if e["type"] == "m.room.member"
    ]
    assert memberships == [(ghost, "join"), (ghost, "leave"), (ghost, "join")]


async def test_a_room_alias_in_the_namespace_is_interest(
    world: World, client: MatrixClient
) -> None:
    """A room whose alias (made by createRoom, also its canonical alias) is in beta's
    alias namespace: beta gets its events, though neither its bot nor its users are in."""
    alice = await client.register()
    body = {"room_alias_name": f"beta_lobby{next(_txn)}"}
    room_id = (await client.request("POST", "createRoom", body, alice)).ok()["room_id"]
    sent = await send(client, alice, room_id, 2)
    await wait_for_events(world.beta.appservice, room_id, sent)
    assert_in_order_once(world.beta.appservice, room_id, sent)
    assert received(world.alpha.appservice, room_id) == []


async def test_an_alias_moved_by_a_room_upgrade_counts_at_once(
    world: World, client: MatrixClient
) -> None:
    """A local alias in beta's namespace (not the canonical alias) moves to the new room
    of an upgrade: the new room's messages reach beta at once, as the old room's did."""
    alice = await client.register()
    old_room = (await client.request("POST", "createRoom", {}, alice)).ok()["room_id"]
    alias = quote(f"#beta_moved{next(_txn)}:{SERVER_NAME}")
    (await client.request("PUT", f"directory/room/{alias}", {"room_id": old_room}, alice)).ok()
    before = await send(client, alice, old_room, 1)
    await wait_for_events(world.beta.appservice, old_room, before)
    upgrade = {"new_version": "10"}
    path = f"rooms/{quote(old_room)}/upgrade"
    new_room = (await client.request("POST", path, upgrade, alice)).ok()["replacement_room"]
    after = await send(client, alice, new_room, 2)
    await wait_for_events(world.beta.appservice, new_room, after)
    assert_in_order_once(world.beta.appservice, new_room, after)


async def test_events_in_rooms_without_interest_are_not_sent(
    world: World, client: MatrixClient
) -> None:
    alice = await client.register()
    unwatched = await room_with(client, alice)
    await send(client, alice, unwatched, 3)
    # Sent after them: once these arrived, anything of the first room would have too.
    watched = await room_with(client, alice, world.beta)
    last = await send(client, alice, watched, 1)
    await wait_for_events(world.beta.appservice, watched, last)
    for b in (world.alpha, world.beta):
        assert received(b.appservice, unwatched) == []
    assert received(world.alpha.appservice, watched) == []


async def test_a_failing_appservice_gets_everything_once_it_recovers(
    world: World, client: MatrixClient
) -> None:
    alpha = world.alpha.appservice
    alice = await client.register()
    room_id = await room_with(client, alice, world.alpha)
    await wait_for_bot(world.alpha, room_id)
    attempts_before = len(alpha.attempts)
    alpha.fail_with = 500
    try:
        sent = await send(client, alice, room_id, 10)
        # Tried, failed, and tried again (after 1 s) with the same transaction.
        await alpha.wait_for(lambda a: len(a.attempts) >= attempts_before + 2, WAIT)
        failed = alpha.attempts[attempts_before:]
        assert failed[0][0] == failed[1][0] and failed[0][1] == failed[1][1]
        more = await send(client, alice, room_id, 5)
    finally:
        alpha.fail_with = None
    await wait_for_events(alpha, room_id, sent + more)
    assert_in_order_once(alpha, room_id, sent + more)
    assert_ids_kept_their_content(alpha)


async def test_one_appservice_down_does_not_delay_another(
    world: World, client: MatrixClient
) -> None:
    alpha, beta = world.alpha.appservice, world.beta.appservice
    alice = await client.register()
    room_id = await room_with(client, alice, world.alpha, world.beta)
    await wait_for_bot(world.beta, room_id)
    beta.fail_with = 503
    try:
        started = time.monotonic()
        sent = await send(client, alice, room_id, 5)
        await wait_for_events(alpha, room_id, sent, 5.0)
        assert time.monotonic() - started < 5.0
        assert not set(sent) & set(received_ids(beta, room_id))
    finally:
        beta.fail_with = None
    await wait_for_events(beta, room_id, sent)
    assert_in_order_once(alpha, room_id, sent)
    assert_in_order_once(beta, room_id, sent)


async def test_nothing_is_lost_across_a_crash_while_the_appservice_is_down(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    gamma = bridge("gamma")
    await gamma.appservice.start()
    server = await start_server(backend, request, tmp_path, {"gamma": gamma})
    try:
        async with new_session() as session:
            client = MatrixClient(session, server.base_url)
            alice = await client.register()
            room_id = await room_with(client, alice, gamma)
            await wait_for_bot(gamma, room_id)
            await gamma.appservice.stop()  # down: connections refused
            sent = await send(client, alice, room_id, 10)
            await asyncio.to_thread(server.kill_and_restart)
            sent += await send(client, alice, room_id, 5)
            await gamma.appservice.start()
            await wait_for_events(gamma.appservice, room_id, sent, 40.0)
            assert_in_order_once(gamma.appservice, room_id, sent)
            assert_ids_kept_their_content(gamma.appservice)
    finally:
        await asyncio.to_thread(server.stop)
        await gamma.appservice.stop()


async def test_local_invites_and_knocks_carry_the_rooms_stripped_state(
    world: World, client: MatrixClient
) -> None:
    """An invite of the bot made on this server, and a knock in a room the bot is in,
    reach the appservice with the room's stripped state as remote invites do."""
    alice, carol = await client.register(), await client.register()
    body = {
        "name": "Portal",
        "initial_state": [
            {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}
        ],
    }
    room_id = (await client.request("POST", "createRoom", body, alice)).ok()["room_id"]
    path = f"rooms/{quote(room_id)}"
    (await client.request("POST", f"{path}/invite", {"user_id": world.alpha.bot}, alice)).ok()
    (await client.request("POST", f"{path}/join", {}, world.alpha.as_token)).ok()
    (await client.request("POST", f"knock/{quote(room_id)}", {}, carol)).ok()

    def member(state_key: str, membership: str) -> dict[str, Any] | None:
        for e in received(world.alpha.appservice, room_id):
            if e.get("state_key") == state_key and e["content"].get("membership") == membership:
                return e
        return None

    await world.alpha.appservice.wait_for(lambda a: member(carol.user_id, "knock") is not None)
    for event, key in (
        (member(world.alpha.bot, "invite"), "invite_room_state"),
        (member(carol.user_id, "knock"), "knock_room_state"),
    ):
        assert event is not None
        stripped = {(s["type"], s["state_key"]): s for s in event["unsigned"][key]}
        assert stripped[("m.room.name", "")]["content"] == {"name": "Portal"}
        assert stripped[("m.room.join_rules", "")]["content"] == {"join_rule": "knock"}
        assert ("m.room.create", "") in stripped
        assert set(stripped[("m.room.create", "")]) == {"type", "state_key", "content", "sender"}


async def test_a_catch_up_decides_with_the_members_at_each_event(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """While the appservice is down (and across a kill -9) its bot leaves one room and
    joins another: the messages sent while it was in the first still reach it, the
    second room's earlier history does not (interest is that at the event, not now)."""
    zeta = bridge("zeta")
    await zeta.appservice.start()
    server = await start_server(backend, request, tmp_path, {"zeta": zeta})
    try:
        async with new_session() as session:
            client = MatrixClient(session, server.base_url)
            alice = await client.register()
            left_room = await room_with(client, alice, zeta)
            await wait_for_bot(zeta, left_room)
            await zeta.appservice.stop()
            while_joined = await send(client, alice, left_room, 3)
            path = f"rooms/{quote(left_room)}/leave"
            (await client.request("POST", path, {}, zeta.as_token)).ok()
            after_leave = await send(client, alice, left_room, 1)
            joined_room = (await client.request("POST", "createRoom", {}, alice)).ok()["room_id"]
            before_join = await send(client, alice, joined_room, 2)
            path = f"rooms/{quote(joined_room)}"
            (await client.request("POST", f"{path}/invite", {"user_id": zeta.bot}, alice)).ok()
            (await client.request("POST", f"{path}/join", {}, zeta.as_token)).ok()
            after_join = await send(client, alice, joined_room, 1)
            await asyncio.to_thread(server.kill_and_restart)
            await zeta.appservice.start()
            await wait_for_events(zeta.appservice, left_room, while_joined, 40.0)
            await wait_for_events(zeta.appservice, joined_room, after_join, 40.0)
            assert not set(after_leave) & set(received_ids(zeta.appservice, left_room))
            assert not set(before_join) & set(received_ids(zeta.appservice, joined_room))
    finally:
        await asyncio.to_thread(server.stop)
        await zeta.appservice.stop()


async def test_a_reload_starts_and_stops_senders(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """SIGHUP: an appservice given a url starts at the newest event; one whose url is
    taken away stops, and resumes from where it stopped when it gets it back."""
    delta, epsilon = bridge("delta"), bridge("epsilon")
    await delta.appservice.start()
    await epsilon.appservice.start()
    bridges = {"delta": delta, "epsilon": epsilon}
    server = await start_server(backend, request, tmp_path, bridges, silent=("epsilon",))
    try:
        async with new_session() as session:
            client = MatrixClient(session, server.base_url)
            admin = await login_admin(client, server)

            async def reload(**listening: bool) -> None:
                for name, on in listening.items():
                    register(tmp_path, name, bridges[name], listening=on)
                os.kill(server.pid, signal.SIGHUP)
                deadline = time.monotonic() + WAIT
                while True:
                    listed = await client.request(
                        "GET", "/_peyvand/admin/v1/appservices", token=admin
                    )
                    # Its sender started: it has a position (the registry reloads at
                    # once, the senders after the events routed before the reload).
                    states = {
                        a["id"]: a["state"] != "no_url" and a["events_position"] > 0
                        for a in listed.ok()["appservices"]
                    }
                    if all(states[name] == on for name, on in listening.items()):
                        return
                    assert time.monotonic() < deadline, states
                    await asyncio.sleep(0.1)

            alice = await client.register()
            room_id = await room_with(client, alice, delta, epsilon)
            first = await send(client, alice, room_id, 1)
            await wait_for_events(delta.appservice, room_id, first)
            await reload(delta=False, epsilon=True)
            second = await send(client, alice, room_id, 2)
            await wait_for_events(epsilon.appservice, room_id, second)
            assert received_ids(epsilon.appservice, room_id) == second
            await reload(delta=True)
            await wait_for_events(delta.appservice, room_id, second)
            assert_in_order_once(delta.appservice, room_id, first + second)
    finally:
        await asyncio.to_thread(server.stop)
        await delta.appservice.stop()
        await epsilon.appservice.stop()


async def test_invites_from_another_server_reach_the_appservice(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Invites of the bot to rooms on another server (kept apart from the events): one
    live, one while the appservice is down and the server is killed, caught up after."""
    zeta = AttemptsAppService("hs-zeta")
    await zeta.start()
    server = new_homeserver(backend, request, tmp_path / "server", federation=True)
    bot = f"@zetabot:{server.server_name}"
    registration = write_registration(
        tmp_path / "zeta.yaml",
        appservice_id="zeta",
        url=zeta.url,
        as_token="as-zeta",
        hs_token=zeta.hs_token,
        sender_localpart="zetabot",
        user_regex="@zeta_.*",
    )
    server.configure({"app_service_config_files": f'["{registration}"]'})
    await asyncio.to_thread(server.start)
    stripped = [{"type": "m.room.name", "state_key": "", "content": {"name": "Remote"}}]
    try:
        async with FakeServer(tmp_path, peer=server.server_name) as fake:

            async def invite(room_id: str) -> str:
                pdu = fake.make_invite(room_id, fake.user("bob"), bot)
                body = {
                    "room_version": "11",
                    "event": dict(pdu.data),
                    "invite_room_state": stripped,
                }
                path = f"{FEDERATION_V2}/invite/{q(room_id)}/{q(pdu.event_id)}"
                status, answer = await fake.request("PUT", path, body)
                assert status == 200, answer
                return pdu.event_id

            def invites(appservice: RecordingAppService) -> list[dict[str, Any]]:
                return [e for e in appservice.events if e["type"] == "m.room.member"]

            first = await invite(f"!first:{fake.server_name}")
            await zeta.wait_for(lambda a: len(invites(a)) == 1, WAIT)
            event = invites(zeta)[0]
            assert (event["event_id"], event["state_key"]) == (first, bot)
            assert event["content"] == {"membership": "invite"}
            assert event["sender"] == fake.user("bob")
            assert event["unsigned"]["invite_room_state"] == stripped
            await zeta.stop()
            second = await invite(f"!second:{fake.server_name}")
            await asyncio.to_thread(server.kill_and_restart)
            await zeta.start()
            await zeta.wait_for(lambda a: second in [e["event_id"] for e in invites(a)], 40.0)
            # A live invite moves no acknowledged position past events that may still be
            # on their way below it: with no event after it, a kill -9 sends it again.
            assert [e["event_id"] for e in invites(zeta)] in (
                [first, second],
                [first, first, second],
            )
    finally:
        await asyncio.to_thread(server.stop)
        await zeta.stop()


async def test_a_held_invite_reaches_the_appservice_once_released(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """An invite from another server to a namespace user holding such invites as message
    requests (``hold-remote``) reaches the appservice when the user accepts the request,
    not before."""
    eta = AttemptsAppService("hs-eta")
    await eta.start()
    server = new_homeserver(backend, request, tmp_path / "server", federation=True)
    bot = f"@etabot:{server.server_name}"
    registration = write_registration(
        tmp_path / "eta.yaml",
        appservice_id="eta",
        url=eta.url,
        as_token="as-eta",
        hs_token=eta.hs_token,
        sender_localpart="etabot",
        user_regex="@eta_.*",
    )
    server.configure({"app_service_config_files": f'["{registration}"]'})
    await asyncio.to_thread(server.start)
    try:
        async with new_session() as session, FakeServer(tmp_path, peer=server.server_name) as fake:
            client = MatrixClient(session, server.base_url)
            registered = await client.request(
                "POST",
                "register",
                json={"type": "m.login.application_service", "username": "eta_held"},
                token="as-eta",
            )
            held_user = registered.ok()["user_id"]
            as_held = {"user_id": held_user}
            policy = await client.request(
                "PUT",
                "/_peyvand/client/v1/invite_policy",
                json={"policy": "hold-remote"},
                token="as-eta",
                params=as_held,
            )
            policy.ok()

            async def invite(room_id: str, target: str) -> str:
                pdu = fake.make_invite(room_id, fake.user("bob"), target)
                body = {"room_version": "11", "event": dict(pdu.data), "invite_room_state": []}
                path = f"{FEDERATION_V2}/invite/{q(room_id)}/{q(pdu.event_id)}"
                status, answer = await fake.request("PUT", path, body)
                assert status == 200, answer
                return pdu.event_id

            def invited(appservice: RecordingAppService) -> list[str]:
                return [e["event_id"] for e in appservice.events if e["type"] == "m.room.member"]

            held_room = f"!held:{fake.server_name}"
            held = await invite(held_room, held_user)
            # Routed in order: once the later invite of the bot is in, the held one would be.
            marker = await invite(f"!marker:{fake.server_name}", bot)
            await eta.wait_for(lambda a: marker in invited(a), WAIT)
            assert held not in invited(eta)
            accepted = await client.request(
                "POST",
                f"/_peyvand/client/v1/invite_requests/{quote(held_room)}/accept",
                json={},
                token="as-eta",
                params=as_held,
            )
            assert accepted.ok() == {}
            await eta.wait_for(lambda a: held in invited(a), WAIT)
            assert invited(eta) == [marker, held]
            event = next(e for e in eta.events if e["event_id"] == held)
            assert (event["state_key"], event["sender"]) == (held_user, fake.user("bob"))
    finally:
        await asyncio.to_thread(server.stop)
        await eta.stop()
