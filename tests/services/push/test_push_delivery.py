"""Push notifications delivered to a push gateway (Push Gateway API,
``POST /_matrix/push/v1/notify``), on every backend: a real Peyvand allowed to reach
127.0.0.1 (``push.gateway_allowed_networks``) and a gateway served by the test that
records what arrives and answers 200, 500, ``rejected`` or never, per pushkey."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

from harness.client import Account, MatrixClient, new_session, unique_localpart
from harness.fake_server import FEDERATION_V2, FakeServer, q
from harness.local_http import start_post_site
from harness.ports import free_port
from harness.server import HomeserverProcess, running_homeserver

NOTIFY = "/_matrix/push/v1/notify"
APP_ID = "im.peyvand.test"
WAIT = 2.0
# The server's bound on concurrent sends (a quarter of it per gateway host).
MAX_SENDS = 8


@dataclass
class Received:
    pushkey: str
    notification: dict[str, Any]
    status: int


@dataclass
class Gateway:
    """A push gateway on 127.0.0.1. ``answers[pushkey]`` lists what the next requests for
    that pushkey get ("ok", "fail", "reject", "hang"); then "ok"."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    answers: dict[str, list[str]] = field(default_factory=dict)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        notification = body["notification"]
        pushkey = notification["devices"][0]["pushkey"]
        queued = self.answers.get(pushkey, [])
        answer = queued.pop(0) if queued else "ok"
        if answer == "hang":
            await self.released.wait()
        status = 500 if answer == "fail" else 200
        self.received.append(Received(pushkey, notification, status))
        self.arrived.set()
        if answer == "fail":
            return web.json_response({"error": "down"}, status=500)
        return web.json_response({"rejected": [pushkey] if answer == "reject" else []})

    def delivered(self, pushkey: str) -> list[dict[str, Any]]:
        return [r.notification for r in self.received if r.pushkey == pushkey and r.status == 200]

    async def wait_for(
        self, pushkey: str, count: int = 1, within: float = WAIT
    ) -> list[dict[str, Any]]:
        """The notifications delivered to ``pushkey`` once there are ``count``."""
        deadline = time.monotonic() + within
        while len(self.delivered(pushkey)) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{pushkey}: {len(self.delivered(pushkey))} of {count} pushes"
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), min(remaining, 0.2))
        return self.delivered(pushkey)


@pytest.fixture(scope="module")
def push_server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeserverProcess]:
    with running_homeserver(
        backend,
        request,
        tmp_path_factory.mktemp("push"),
        options={
            "push.gateway_allowed_networks": '["127.0.0.1/32"]',
            "push.gateway_timeout": "3.0",
            "push.max_concurrent_sends": str(MAX_SENDS),
        },
    ) as server:
        yield server


@contextlib.asynccontextmanager
async def serve_gateway(host: str = "127.0.0.1") -> AsyncIterator[Gateway]:
    gw = Gateway()
    port = free_port()
    runner = await start_post_site(host, port, NOTIFY, gw.handle)
    gw.url = f"http://{host}:{port}{NOTIFY}"
    try:
        yield gw
    finally:
        gw.released.set()
        await runner.cleanup()


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    async with serve_gateway() as gw:
        yield gw


@pytest.fixture
async def mc(push_server: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, push_server.base_url)


async def add_pusher(client: MatrixClient, account: Account, gateway: Gateway, **data: Any) -> str:
    pushkey = unique_localpart("pushkey")
    body = {
        "kind": "http",
        "app_id": APP_ID,
        "pushkey": pushkey,
        "app_display_name": "Test app",
        "device_display_name": "Test phone",
        "lang": "en",
        "data": {"url": gateway.url, **data},
    }
    (await client.request("POST", "pushers/set", json=body, token=account)).ok()
    return pushkey


async def room(client: MatrixClient, creator: Account, *members: Account, **extra: Any) -> str:
    room_id: str = (
        await client.request(
            "POST", "createRoom", json={"preset": "public_chat", **extra}, token=creator
        )
    ).ok()["room_id"]
    for member in members:
        (await client.request("POST", f"join/{room_id}", json={}, token=member)).ok()
    return room_id


async def say(client: MatrixClient, room_id: str, sender: Account, body: str, **more: Any) -> str:
    event_id: str = (
        await client.request(
            "PUT",
            f"rooms/{room_id}/send/m.room.message/{unique_localpart('txn')}",
            json={"msgtype": "m.text", "body": body, **more},
            token=sender,
        )
    ).ok()["event_id"]
    return event_id


async def trio(client: MatrixClient, **extra: Any) -> tuple[Account, Account, str]:
    """Alice, Bob and a room of three (so a plain message neither rings nor highlights)."""
    alice, bob, carol = await client.register(), await client.register(), await client.register()
    (
        await client.request(
            "PUT",
            f"profile/{alice.user_id}/displayname",
            json={"displayname": "Alice"},
            token=alice,
        )
    ).ok()
    return alice, bob, await room(client, alice, bob, carol, **extra)


async def test_message_is_pushed_with_its_fields(mc: MatrixClient, gateway: Gateway) -> None:
    alias = unique_localpart("pushy")
    alice, bob, room_id = await trio(mc, name="Pushy room", room_alias_name=alias)
    pushkey = await add_pusher(mc, bob, gateway, extra="kept")
    started = time.monotonic()
    event_id = await say(mc, room_id, alice, "hello bob")
    [notification] = await gateway.wait_for(pushkey)
    assert time.monotonic() - started < WAIT
    device = notification.pop("devices")[0]
    assert notification == {
        "id": event_id,
        "event_id": event_id,
        "room_id": room_id,
        "type": "m.room.message",
        "sender": alice.user_id,
        "sender_display_name": "Alice",
        "room_name": "Pushy room",
        "room_alias": f"#{alias}:{alice.user_id.split(':', 1)[1]}",
        "prio": "low",
        "content": {"msgtype": "m.text", "body": "hello bob"},
        "counts": {"unread": 1},
    }
    assert device["app_id"] == APP_ID and device["pushkey"] == pushkey
    assert device["data"] == {"extra": "kept"}
    assert isinstance(device["pushkey_ts"], int) and abs(device["pushkey_ts"] - time.time()) < 60


async def test_a_room_without_a_name_is_named_by_its_alias(
    mc: MatrixClient, gateway: Gateway
) -> None:
    alias_name = unique_localpart("unnamed")
    alice, bob, room_id = await trio(mc, room_alias_name=alias_name)
    pushkey = await add_pusher(mc, bob, gateway)
    await say(mc, room_id, alice, "hello")
    [notification] = await gateway.wait_for(pushkey)
    alias = f"#{alias_name}:{alice.user_id.split(':', 1)[1]}"
    assert (notification["room_name"], notification["room_alias"]) == (alias, alias)


async def test_event_id_only(mc: MatrixClient, gateway: Gateway) -> None:
    alice, bob, room_id = await trio(mc)
    pushkey = await add_pusher(mc, bob, gateway, format="event_id_only")
    event_id = await say(mc, room_id, alice, "secret")
    [notification] = await gateway.wait_for(pushkey)
    device = notification.pop("devices")[0]
    assert notification == {
        "event_id": event_id,
        "room_id": room_id,
        "prio": "low",
        "counts": {"unread": 1},
    }
    assert device["data"] == {"format": "event_id_only"} and "tweaks" not in device


async def test_muted_room_sends_nothing(mc: MatrixClient, gateway: Gateway) -> None:
    alice, bob, muted = await trio(mc)
    other = await room(mc, alice, bob)
    pushkey = await add_pusher(mc, bob, gateway)
    (
        await mc.request("PUT", f"pushrules/global/room/{muted}", json={"actions": []}, token=bob)
    ).ok()
    await say(mc, muted, alice, "you will not hear this")
    sentinel = await say(mc, other, alice, "but this")
    # One pusher sends in stream order: the muted message would have come first.
    [notification] = await gateway.wait_for(pushkey)
    assert notification["event_id"] == sentinel


async def test_mention_is_high_priority_and_highlights(mc: MatrixClient, gateway: Gateway) -> None:
    alice, bob, room_id = await trio(mc)
    pushkey = await add_pusher(mc, bob, gateway)
    await say(mc, room_id, alice, "bob!", **{"m.mentions": {"user_ids": [bob.user_id]}})
    [notification] = await gateway.wait_for(pushkey)
    assert notification["prio"] == "high"
    assert notification["devices"][0]["tweaks"] == {"sound": "default", "highlight": True}


@pytest.mark.parametrize("receipt_type", ["m.read", "m.read.private"])
async def test_read_receipt_sends_counts_only(
    mc: MatrixClient, gateway: Gateway, receipt_type: str
) -> None:
    alice, bob, room_id = await trio(mc)
    pushkey = await add_pusher(mc, bob, gateway)
    event_id = await say(mc, room_id, alice, "read me")
    [pushed] = await gateway.wait_for(pushkey)
    assert pushed["counts"] == {"unread": 1}
    (
        await mc.request(
            "POST", f"rooms/{room_id}/receipt/{receipt_type}/{event_id}", json={}, token=bob
        )
    ).ok()
    _, update = await gateway.wait_for(pushkey, 2)
    assert update["counts"] == {"unread": 0}
    assert set(update) == {"counts", "devices"}
    assert update["devices"][0]["pushkey"] == pushkey


async def test_failing_gateway_is_retried_and_delivers_once(
    mc: MatrixClient, gateway: Gateway
) -> None:
    alice, bob, room_id = await trio(mc)
    pushkey = await add_pusher(mc, bob, gateway)
    gateway.answers[pushkey] = ["fail"]
    event_id = await say(mc, room_id, alice, "eventually")
    # Synapse's first back-off is one second.
    [notification] = await gateway.wait_for(pushkey, within=WAIT + 1.5)
    assert notification["event_id"] == event_id
    second = await say(mc, room_id, alice, "and then")
    await gateway.wait_for(pushkey, 2)
    attempts = [r for r in gateway.received if r.pushkey == pushkey]
    assert [(r.status, r.notification["event_id"]) for r in attempts] == [
        (500, event_id),
        (200, event_id),
        (200, second),
    ]


async def test_rejected_pushkey_deletes_the_pusher(mc: MatrixClient, gateway: Gateway) -> None:
    alice, bob, room_id = await trio(mc)
    pushkey = await add_pusher(mc, bob, gateway)
    gateway.answers[pushkey] = ["reject"]
    await say(mc, room_id, alice, "to a dead phone")
    await gateway.wait_for(pushkey)
    deadline = time.monotonic() + WAIT
    while (await mc.request("GET", "pushers", token=bob)).ok()["pushers"]:
        assert time.monotonic() < deadline, "the rejected pusher is still there"
        await asyncio.sleep(0.1)
    await say(mc, room_id, alice, "nobody hears")
    await asyncio.sleep(0.5)
    assert len([r for r in gateway.received if r.pushkey == pushkey]) == 1


async def test_hanging_gateway_does_not_delay_others(mc: MatrixClient, gateway: Gateway) -> None:
    alice, bob, room_id = await trio(mc)
    carol = await mc.register()
    (await mc.request("POST", f"join/{room_id}", json={}, token=carol)).ok()
    stuck = await add_pusher(mc, bob, gateway)
    gateway.answers[stuck] = ["hang"]
    fine = await add_pusher(mc, carol, gateway)
    started = time.monotonic()
    event_id = await say(mc, room_id, alice, "one gateway hangs")
    [notification] = await gateway.wait_for(fine)
    assert notification["event_id"] == event_id
    assert time.monotonic() - started < WAIT
    assert not gateway.delivered(stuck)


async def test_pending_push_is_sent_once_after_kill(
    mc: MatrixClient, gateway: Gateway, push_server: HomeserverProcess
) -> None:
    """A one-to-one room: the push caught up on after the restart is evaluated again, so
    it rings (``.m.rule.room_one_to_one``) as the live one would have."""
    alice, bob = await mc.register(), await mc.register()
    room_id = await room(mc, alice, bob)
    pushkey = await add_pusher(mc, bob, gateway)
    gateway.answers[pushkey] = ["fail"] * 100
    event_id = await say(mc, room_id, alice, "before the crash")
    deadline = time.monotonic() + WAIT
    while not any(r.pushkey == pushkey for r in gateway.received):
        assert time.monotonic() < deadline, "the push was never tried"
        await asyncio.sleep(0.05)
    await asyncio.to_thread(push_server.kill)
    gateway.answers[pushkey] = []
    await asyncio.to_thread(push_server.start)
    [notification] = await gateway.wait_for(pushkey, within=WAIT + 3)
    assert notification["event_id"] == event_id
    assert notification["prio"] == "high"
    assert notification["devices"][0]["tweaks"]["sound"] == "default"
    second = await say(mc, room_id, alice, "after the restart")
    pushed = await gateway.wait_for(pushkey, 2)
    assert [n["event_id"] for n in pushed] == [event_id, second]


async def test_invite_is_pushed_to_its_target(mc: MatrixClient, gateway: Gateway) -> None:
    alice, _, room_id = await trio(mc, name="Come in")
    dave = await mc.register()
    pushkey = await add_pusher(mc, dave, gateway)
    invite = {"user_id": dave.user_id}
    (await mc.request("POST", f"rooms/{room_id}/invite", json=invite, token=alice)).ok()
    [notification] = await gateway.wait_for(pushkey)
    assert notification["type"] == "m.room.member"
    assert notification["membership"] == "invite"
    assert notification["user_is_target"] is True
    assert notification["room_name"] == "Come in"
    assert notification["prio"] == "high"
    assert notification["counts"] == {"unread": 1}  # the invite


async def test_gateway_outside_allowed_networks_is_refused(
    mc: MatrixClient, gateway: Gateway
) -> None:
    """Only 127.0.0.1/32 is allowed: a gateway on 127.0.0.2 is never connected to."""
    async with serve_gateway("127.0.0.2") as elsewhere:
        alice, bob, room_id = await trio(mc)
        refused = await add_pusher(mc, bob, elsewhere)
        allowed = await add_pusher(mc, bob, gateway)
        await say(mc, room_id, alice, "only through the guard")
        await gateway.wait_for(allowed)
        await asyncio.sleep(0.5)
        assert elsewhere.received == []
        listed = (await mc.request("GET", "pushers", token=bob)).ok()["pushers"]
        assert {p["pushkey"] for p in listed} == {refused, allowed}


async def assert_one_gets_through(
    client: MatrixClient, room_id: str, sender: Account, gateway: Gateway, pushkey: str
) -> None:
    """With sends hanging on other gateways, ``sender``'s next message is pushed to
    ``pushkey`` on ``gateway`` at once."""
    await say(client, room_id, sender, "many hang")
    await asyncio.sleep(0.5)  # the hanging sends have all started
    event_id = await say(client, room_id, sender, "and one gets through")
    started = time.monotonic()
    pushed = await gateway.wait_for(pushkey, 2)
    assert pushed[1]["event_id"] == event_id
    assert time.monotonic() - started < 1.0


async def test_dead_host_does_not_take_every_send_slot(mc: MatrixClient, gateway: Gateway) -> None:
    """More pushers on a hanging gateway than the server sends at once: another gateway's
    push still goes out at once."""
    alice, bob, room_id = await trio(mc)
    async with serve_gateway() as dead:
        stuck = []
        for _ in range(MAX_SENDS + 2):
            user = await mc.register()
            (await mc.request("POST", f"join/{room_id}", json={}, token=user)).ok()
            pushkey = await add_pusher(mc, user, dead)
            dead.answers[pushkey] = ["hang"] * 10
            stuck.append(pushkey)
        fine = await add_pusher(mc, bob, gateway)
        await assert_one_gets_through(mc, room_id, alice, gateway, fine)
        assert not any(dead.delivered(k) for k in stuck)


async def test_user_information_does_not_make_one_host_many(
    mc: MatrixClient, gateway: Gateway
) -> None:
    """Pushers on one hanging gateway named with different user information (``u1@host``,
    ``u2@host``) share that host's bound: another gateway's push still goes out at once."""
    alice, bob, room_id = await trio(mc)
    async with serve_gateway() as dead:
        host = dead.url.split("//", 1)[1]
        stuck = []
        for n in range(MAX_SENDS + 2):
            user = await mc.register()
            (await mc.request("POST", f"join/{room_id}", json={}, token=user)).ok()
            pushkey = await add_pusher(mc, user, dead, url=f"http://u{n}@{host}")
            dead.answers[pushkey] = ["hang"] * 10
            stuck.append(pushkey)
        fine = await add_pusher(mc, bob, gateway)
        await assert_one_gets_through(mc, room_id, alice, gateway, fine)


async def test_one_users_pushers_do_not_take_every_send_slot(
    mc: MatrixClient, gateway: Gateway
) -> None:
    """One user's pushers on more hanging gateways than the server sends at once hold
    only that user's share of the slots: another user's push still goes out at once."""
    alice, bob, room_id = await trio(mc)
    carol = await mc.register()
    (await mc.request("POST", f"join/{room_id}", json={}, token=carol)).ok()
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(MAX_SENDS + 2):
            dead = await stack.enter_async_context(serve_gateway())
            pushkey = await add_pusher(mc, bob, dead)
            dead.answers[pushkey] = ["hang"] * 10
        fine = await add_pusher(mc, carol, gateway)
        await assert_one_gets_through(mc, room_id, alice, gateway, fine)


async def test_replaced_pusher_goes_on_from_its_position(
    mc: MatrixClient, gateway: Gateway
) -> None:
    alice, bob, room_id = await trio(mc)
    pushkey = await add_pusher(mc, bob, gateway)
    first = await say(mc, room_id, alice, "first")
    await gateway.wait_for(pushkey)
    body = {
        "kind": "http",
        "app_id": APP_ID,
        "pushkey": pushkey,
        "app_display_name": "Test app",
        "device_display_name": "Test phone",
        "lang": "en",
        "data": {"url": gateway.url, "format": "event_id_only"},
    }
    (await mc.request("POST", "pushers/set", json=body, token=bob)).ok()
    second = await say(mc, room_id, alice, "second")
    pushed = await gateway.wait_for(pushkey, 2)
    await asyncio.sleep(0.3)
    assert [n["event_id"] for n in gateway.delivered(pushkey)] == [first, second]
    assert "content" not in pushed[1] and "content" in pushed[0]


async def test_encrypted_event_is_high_priority(mc: MatrixClient, gateway: Gateway) -> None:
    """``.m.rule.encrypted`` notifies; what it holds is unknown, so it goes out high."""
    alice, bob, room_id = await trio(mc)
    pushkey = await add_pusher(mc, bob, gateway)
    ciphertext = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "session_id": "s"}
    event_id = (
        await mc.request(
            "PUT",
            f"rooms/{room_id}/send/m.room.encrypted/{unique_localpart('txn')}",
            json=ciphertext,
            token=alice,
        )
    ).ok()["event_id"]
    [notification] = await gateway.wait_for(pushkey)
    assert notification["event_id"] == event_id
    assert notification["type"] == "m.room.encrypted"
    assert notification["prio"] == "high"
    assert notification["content"] == ciphertext


# -- invites from other servers ----------------------------------------------------------
# A fake peer (``harness.fake_server``) invites a local user of a federating Peyvand over
# PUT /invite v2. The invite is kept apart from the room's events (this server is not in
# the room) and pushed as a local invite is: the invitee's rules (``.m.rule.invite_for_me``:
# notify, sound default), ``membership`` invite, ``user_is_target``, the room's name from
# the invite's stripped state. An invite from a user the invitee ignores, or one their
# invite policy refuses (403) or holds as a message request, is not pushed: shown by
# order, a pusher sending one notification at a time in stream order.

_invite_rooms = itertools.count(1)
_INVITE_POLICY = "/_peyvand/client/v1/invite_policy"
FEDERATION_TIMEOUT = 60


@pytest.fixture(scope="module")
def federating_push_server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeserverProcess]:
    with running_homeserver(
        backend,
        request,
        tmp_path_factory.mktemp("remote-invite-push"),
        federation=True,
        options={
            "push.gateway_allowed_networks": '["127.0.0.1/32"]',
            "push.gateway_timeout": "3.0",
        },
    ) as server:
        yield server


@pytest.fixture
async def fmc(federating_push_server: HomeserverProcess) -> AsyncIterator[MatrixClient]:
    async with new_session() as session:
        yield MatrixClient(session, federating_push_server.base_url)


@pytest.fixture
async def fake(
    federating_push_server: HomeserverProcess, tmp_path: Path
) -> AsyncIterator[FakeServer]:
    async with FakeServer(tmp_path, peer=federating_push_server.server_name) as server:
        yield server


async def _invite(fake: FakeServer, sender: str, invitee: str) -> tuple[str, str, int, Any]:
    """PUT /invite v2 of an invite of ``invitee`` by ``sender`` to a new room of the fake
    named "Room N", the sender's member event in the stripped state; ``(room ID, event ID,
    status, answer)``."""
    number = next(_invite_rooms)
    room_id = f"!invitepush{number}:{fake.server_name}"
    invite = fake.make_invite(room_id, sender, invitee)
    stripped = [
        {"type": "m.room.create", "state_key": "", "sender": sender, "content": {}},
        {"type": "m.room.name", "state_key": "", "sender": sender,
         "content": {"name": f"Room {number}"}},
        {
            "type": "m.room.member",
            "state_key": sender,
            "sender": sender,
            "content": {"membership": "join", "displayname": "Remote Inviter"},
        },
    ]  # fmt: skip
    status, answer = await fake.request(
        "PUT",
        f"{FEDERATION_V2}/invite/{q(room_id)}/{q(invite.event_id)}",
        {"room_version": "11", "event": dict(invite.data), "invite_room_state": stripped},
    )
    return room_id, invite.event_id, status, answer


async def _user_with_pusher(fmc: MatrixClient, gateway: Gateway) -> tuple[Account, str]:
    account = await fmc.register()
    return account, await add_pusher(fmc, account, gateway)


async def test_remote_invite_is_pushed_as_a_local_invite(
    fmc: MatrixClient, fake: FakeServer, gateway: Gateway
) -> None:
    alice, pushkey = await _user_with_pusher(fmc, gateway)
    inviter = fake.user("inviter")
    async with asyncio.timeout(FEDERATION_TIMEOUT):
        room_id, event_id, status, answer = await _invite(fake, inviter, alice.user_id)
        assert status == 200, answer
        (pushed,) = await gateway.wait_for(pushkey, within=10.0)
    assert pushed["event_id"] == event_id
    assert pushed["room_id"] == room_id
    assert pushed["type"] == "m.room.member"
    assert pushed["sender"] == inviter
    assert pushed["membership"] == "invite"
    assert pushed["user_is_target"] is True
    assert pushed["room_name"].startswith("Room ")
    assert pushed["sender_display_name"] == "Remote Inviter"
    assert pushed["prio"] == "high"
    assert pushed["counts"] == {"unread": 1}  # the invite itself
    assert pushed["devices"][0]["tweaks"] == {"sound": "default"}


async def test_ignored_inviter_is_not_pushed(
    fmc: MatrixClient, fake: FakeServer, gateway: Gateway
) -> None:
    bob, pushkey = await _user_with_pusher(fmc, gateway)
    spammer, friend = fake.user("spammer"), fake.user("friend")
    (
        await fmc.request(
            "PUT",
            f"user/{quote(bob.user_id)}/account_data/m.ignored_user_list",
            json={"ignored_users": {spammer: {}}},
            token=bob,
        )
    ).ok()
    async with asyncio.timeout(FEDERATION_TIMEOUT):
        _, _, status, answer = await _invite(fake, spammer, bob.user_id)
        assert status == 200, answer
        _, event_id, status, answer = await _invite(fake, friend, bob.user_id)
        assert status == 200, answer
        (pushed,) = await gateway.wait_for(pushkey, within=10.0)
        await asyncio.sleep(0.5)
    assert pushed["event_id"] == event_id and pushed["sender"] == friend
    assert len(gateway.delivered(pushkey)) == 1


async def test_invites_refused_or_held_by_the_invite_policy_are_not_pushed(
    fmc: MatrixClient, fake: FakeServer, gateway: Gateway
) -> None:
    carol, pushkey = await _user_with_pusher(fmc, gateway)
    inviter = fake.user("inviter")

    async def set_policy(policy: str) -> None:
        body = {"policy": policy}
        (await fmc.request("PUT", _INVITE_POLICY, json=body, token=carol)).ok()

    async with asyncio.timeout(FEDERATION_TIMEOUT):
        await set_policy("local-only")
        _, _, status, answer = await _invite(fake, inviter, carol.user_id)
        assert status == 403 and answer["errcode"] == "M_INVITE_BLOCKED", answer
        await set_policy("hold-remote")
        _, _, status, answer = await _invite(fake, inviter, carol.user_id)
        assert status == 200, answer  # kept as a message request, not shown
        await set_policy("open")
        _, event_id, status, answer = await _invite(fake, inviter, carol.user_id)
        assert status == 200, answer
        (pushed,) = await gateway.wait_for(pushkey, within=10.0)
        await asyncio.sleep(0.5)
    assert pushed["event_id"] == event_id
    assert len(gateway.delivered(pushkey)) == 1
