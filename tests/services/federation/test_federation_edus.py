"""FederationEdus over the real services on a SQLite database, with a fake sender that
records what would go out (Server-Server API: typing, receipts, presence, device
management, end-to-end encryption, send-to-device). No network: fetches of other
servers are fakes too.

The room is made with the real event pipeline: ALICE (local) creates it, public, and
BOB (remote.org) and DAN (other.org) join; CAROL (remote.org) never does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from signedjson.key import (
    decode_signing_key_base64,
    encode_signing_key_base64,
    generate_signing_key,
)
from signedjson.types import SigningKey

from harness.postgres import PostgresCluster
from peyvand.errors import MatrixError
from peyvand.events.room_versions import ROOM_V12
from peyvand.events.signing import sign_json, verify_key_base64
from peyvand.services.accounts.auth import AuthService
from peyvand.services.accounts.requester import Requester
from peyvand.services.e2ee.device_lists import DeviceListService
from peyvand.services.e2ee.keys import E2eKeysService
from peyvand.services.e2ee.remote_device_lists import UserDevicesFetcher, parse_user_devices
from peyvand.services.e2ee.to_device import ToDeviceService
from peyvand.services.federation.edus import FederationEdus
from peyvand.services.sync.account_data import AccountDataService
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.receipts import ReceiptService
from peyvand.services.sync.streams import StreamToken
from peyvand.services.sync.typing import TypingService
from peyvand.services.timeline.event_creation import EventCreationService, EventSpec
from peyvand.services.timeline.event_dispatch import EventDispatcher
from peyvand.services.timeline.event_writer import EventWriter
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.account_data import AccountDataStore
from peyvand.storage.accounts import AccountStore, DeviceRow
from peyvand.storage.database import Database
from peyvand.storage.device_lists import DeviceListStore
from peyvand.storage.e2e_keys import E2eKeyStore
from peyvand.storage.events import EventStore
from peyvand.storage.migrations import run_migrations
from peyvand.storage.postgres import PostgresDatabase
from peyvand.storage.receipts import ReceiptStore
from peyvand.storage.remote_devices import RemoteDevice, RemoteDeviceStore
from peyvand.storage.sqlite import SqliteDatabase
from peyvand.storage.to_device import ToDeviceStore
from peyvand.types import DeviceID, EventID, JsonDict, RoomID, UserID

ALICE = UserID("@alice:example.org")
ALICE_DEVICE = DeviceID("ALICEPHONE")
ALICE_REQUESTER = Requester(ALICE, ALICE_DEVICE, 1)
BOB = UserID("@bob:remote.org")
CAROL = UserID("@carol:remote.org")
DAN = UserID("@dan:other.org")
REMOTE = "remote.org"


@dataclass
class FakeSender:
    """Records the EDUs FederationSender would send."""

    ephemeral: list[tuple[str, str, JsonDict]] = field(default_factory=list)
    durable: list[tuple[str, str, JsonDict]] = field(default_factory=list)

    async def send_edu(
        self, destination: str, edu_type: str, content: JsonDict, *, durable: bool
    ) -> None:
        (self.durable if durable else self.ephemeral).append((destination, edu_type, content))

    async def send_durable_edus(self, edus: Sequence[tuple[str, str, JsonDict]]) -> None:
        self.durable.extend(edus)

    def clear(self) -> None:
        self.ephemeral.clear()
        self.durable.clear()


@dataclass
class FakeAuth:
    """What E2eKeysService uses of AuthService."""

    accounts: AccountStore

    async def require_password(
        self, requester: Requester, auth: Mapping[str, Any] | None, operation: str
    ) -> None:
        return None

    async def get_devices(self, user_id: UserID) -> list[DeviceRow]:
        return await self.accounts.get_devices(user_id)


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Node:
    """The services of one start of the server (the database and rooms stay)."""

    clock: Clock
    typing: TypingService
    receipts: ReceiptService
    to_device: ToDeviceService
    device_lists: DeviceListService
    e2e_keys: E2eKeysService
    store: RemoteDeviceStore
    sender: FakeSender
    edus: FederationEdus


@dataclass
class World:
    db: SqliteDatabase
    state: StateService
    index: RoomIndex
    notifier: Notifier
    accounts: AccountStore
    events: EventCreationService
    # Set by the fixture.
    room: RoomID = field(init=False)
    message: EventID = field(init=False)
    node: Node = field(init=False)

    async def restart(self, **kwargs: Any) -> Node:
        """New services (and FederationEdus, with ``kwargs``) over the same database."""
        db, state, notifier = self.db, self.state, self.notifier
        clock = Clock()
        account_data = AccountDataService(AccountDataStore(db), state, notifier)
        receipts = ReceiptService(ReceiptStore(db), account_data, state, notifier)
        to_device = ToDeviceService("example.org", ToDeviceStore(db), notifier)
        device_lists = DeviceListService(
            "example.org", DeviceListStore(db), self.index, state, notifier
        )
        e2e_keys = E2eKeysService(
            "example.org",
            E2eKeyStore(db),
            cast(AuthService, FakeAuth(self.accounts)),
            device_lists.notify_user_changed,
        )
        for service in (account_data, receipts, to_device, device_lists):
            await service.start()
        typing = TypingService(notifier, state, clock=clock)
        store = RemoteDeviceStore(db)
        sender = FakeSender()
        edus = FederationEdus(
            "example.org",
            state,
            self.index,
            sender,
            typing,
            receipts,
            to_device,
            device_lists,
            e2e_keys,
            store,
            **kwargs,
        )
        self.node = Node(
            clock, typing, receipts, to_device, device_lists, e2e_keys, store, sender, edus
        )
        return self.node

    async def add_device(self, user_id: UserID, device_id: str) -> None:
        """A login, as AuthService.create_session does it."""
        await self.accounts.create_access_token(
            user_id, DeviceID(device_id), f"token-{device_id}", display_name=None, ip=None, now_ms=1
        )
        await self.node.device_lists.on_device_created(user_id, device_id)

    async def delete_device(self, user_id: UserID, device_id: str) -> None:
        """A deleted device, with AuthService's hooks in app.py's order."""
        await self.accounts.delete_devices(user_id, [device_id])
        await self.node.to_device.on_devices_deleted(user_id, [device_id])
        await self.node.e2e_keys.on_devices_deleted(user_id, [device_id])
        await self.node.device_lists.on_devices_deleted(user_id, [device_id])


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    db = await SqliteDatabase.open(str(tmp_path / "edus.db"))
    writer: EventWriter | None = None
    try:
        await run_migrations(db)
        event_store = EventStore(db)
        state = StateService(event_store)
        await state.start()
        index = RoomIndex(event_store)
        await index.start()
        notifier = Notifier(StreamToken())
        dispatcher = EventDispatcher("example.org", state, index, notifier)
        writer = EventWriter(db, event_store, dispatcher.on_persisted, dispatcher.on_failed)
        events = EventCreationService("example.org", generate_signing_key("a"), event_store, state)
        await events.start(writer)
        writer.start()
        accounts = AccountStore(db)
        await accounts.create_user(ALICE, None, is_admin=False, created_ts=1)
        await accounts.create_access_token(
            ALICE, ALICE_DEVICE, "token", display_name="phone", ip=None, now_ms=1
        )
        world = World(db, state, index, notifier, accounts, events)
        await world.restart()

        join = EventSpec("m.room.member", {"membership": "join"}, ALICE)
        public = EventSpec("m.room.join_rules", {"join_rule": "public"}, "")
        world.room, _ = await events.create_room(
            ROOM_V12, ALICE, {"room_version": "12"}, [join, public], room_id=None, is_public=True
        )
        for user in (BOB, DAN):
            spec = EventSpec("m.room.member", {"membership": "join"}, user)
            await events.send(world.room, user, spec)
        message = await events.send(world.room, ALICE, EventSpec("m.room.message", {"body": "hi"}))
        world.message = message.pdu.event_id
        yield world
    finally:
        if writer is not None:
            await writer.stop()
        await db.close()


def edu(edu_type: str, content: Any) -> JsonDict:
    return {"edu_type": edu_type, "content": content}


def device_keys(user_id: UserID, device_id: str, key: str = "curve") -> JsonDict:
    return {
        "user_id": user_id,
        "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": {f"curve25519:{device_id}": key},
    }


def signed_device_keys(key: SigningKey, user_id: UserID, device_id: str) -> JsonDict:
    body = {
        "user_id": user_id,
        "device_id": device_id,
        "algorithms": ["m.megolm.v1.aes-sha2"],
        "keys": {f"ed25519:{device_id}": verify_key_base64(key)},
    }
    return sign_json(body, user_id, key)


def signing_key() -> SigningKey:
    """A fresh ed25519 key whose version is its public key (as cross-signing keys are)."""
    seed = generate_signing_key("x")
    public = verify_key_base64(seed)
    return decode_signing_key_base64("ed25519", public, encode_signing_key_base64(seed))


def cross_signing_key(user_id: UserID, usage: str, key: SigningKey) -> JsonDict:
    public = verify_key_base64(key)
    return {"user_id": user_id, "usage": [usage], "keys": {f"ed25519:{public}": public}}


def device_list_update(
    stream_id: int, prev_id: list[int], device_id: str = "BOBPHONE", **extra: Any
) -> JsonDict:
    content = {"user_id": BOB, "device_id": device_id, "stream_id": stream_id, "prev_id": prev_id}
    return edu("m.device_list_update", {**content, **extra})


def user_devices_fetcher(answers: dict[UserID, Any], calls: list[UserID]) -> UserDevicesFetcher:
    async def fetch(server: str, user_id: UserID) -> Any:
        calls.append(user_id)
        assert server == user_id.partition(":")[2]
        answer = answers[user_id]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return fetch


async def changed_since(world: World, since: StreamToken) -> list[UserID]:
    return (
        await world.node.device_lists.changes(ALICE, since, world.notifier.current_token)
    ).changed


# Inbound: typing ---------------------------------------------------------------------------


async def test_remote_typing_reaches_local_users_and_expires(world: World) -> None:
    typing = world.node.typing
    since = typing.current_position
    await world.node.edus.on_edus(
        REMOTE, [edu("m.typing", {"room_id": world.room, "user_id": BOB, "typing": True})]
    )
    assert typing.typing_for_rooms([world.room], since) == {
        world.room: {"type": "m.typing", "content": {"user_ids": [BOB]}}
    }
    assert world.notifier.current_token.typing == typing.current_position > since
    world.node.clock.now += 31
    await typing.expire_due()
    assert typing.typing_for_rooms([world.room], since)[world.room]["content"]["user_ids"] == []
    # A remote user's typing is never relayed to other servers.
    assert world.node.sender.ephemeral == []


@pytest.mark.parametrize(
    ("room", "user", "typing"),
    [
        ("!unknown:remote.org", BOB, True),
        (None, BOB, True),
        ("joined", CAROL, True),  # not joined
        ("joined", DAN, True),  # not a user of the origin
        ("joined", BOB, "yes"),
        ("joined", "bob", True),
    ],
)
async def test_bad_typing_is_ignored(
    world: World, room: str | None, user: str, typing: Any, caplog: pytest.LogCaptureFixture
) -> None:
    content = {"user_id": user, "typing": typing}
    if room is not None:
        content["room_id"] = world.room if room == "joined" else room
    since = world.node.typing.current_position
    with caplog.at_level(logging.INFO, "peyvand.services.federation.edus"):
        await world.node.edus.on_edus(REMOTE, [edu("m.typing", content)])
    assert world.node.typing.typing_for_rooms([world.room], since) == {}
    assert "ignored" in caplog.text


async def test_malformed_edus_never_raise_and_presence_is_ignored(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    since = world.notifier.current_token
    with caplog.at_level(logging.INFO, "peyvand.services.federation.edus"):
        await world.node.edus.on_edus(
            REMOTE,
            [
                None,
                [],
                {"edu_type": 3, "content": {}},
                {"edu_type": "m.typing"},
                {"edu_type": "m.typing", "content": []},
                edu("m.presence", {"push": [{"user_id": BOB, "presence": "online"}]}),
                edu("m.unknown", {}),
                edu("m.receipt", {world.room: []}),
                edu("m.direct_to_device", {"sender": BOB}),
                edu("m.device_list_update", {"user_id": BOB, "device_id": 5}),
                edu("m.signing_key_update", {"user_id": BOB, "master_key": "nope"}),
            ],
        )
    assert world.notifier.current_token == since
    # Each was ignored as malformed (or unsupported), none failed.
    assert not [r for r in caplog.records if r.levelno > logging.INFO]
    assert sum("ignored" in r.getMessage() for r in caplog.records) == 9


async def test_server_acl_denies_typing_and_receipts_from_a_denied_server(world: World) -> None:
    acl = {"allow": ["*"], "deny": ["remote.org"], "allow_ip_literals": True}
    await world.events.send(world.room, ALICE, EventSpec("m.room.server_acl", acl, ""))
    since = world.node.typing.current_position
    receipts_since = world.node.receipts.current_position
    await world.node.edus.on_edus(
        REMOTE,
        [
            edu("m.typing", {"room_id": world.room, "user_id": BOB, "typing": True}),
            edu("m.receipt", {world.room: {"m.read": {BOB: receipt(world.message)}}}),
        ],
    )
    assert world.node.typing.typing_for_rooms([world.room], since) == {}
    assert world.node.receipts.current_position == receipts_since
    # The servers the ACL allows still are.
    typing = {"room_id": world.room, "user_id": DAN, "typing": True}
    await world.node.edus.on_edus("other.org", [edu("m.typing", typing)])
    typing_now = world.node.typing.typing_for_rooms([world.room], since)
    assert typing_now[world.room]["content"]["user_ids"] == [DAN]


# Inbound: receipts -------------------------------------------------------------------------


def receipt(event_id: str, ts: int = 1234, **data: Any) -> JsonDict:
    return {"event_ids": [event_id], "data": {"ts": ts, **data}}


async def test_remote_receipts_are_stored_for_local_syncs(world: World) -> None:
    since = world.node.receipts.current_position
    content = {
        world.room: {
            "m.read": {
                BOB: receipt(world.message, thread_id="main"),
                CAROL: receipt(world.message),  # not joined
                DAN: receipt(world.message),  # not of the origin
                "@eve:remote.org": {"event_ids": []},
            },
            "m.read.private": {BOB: receipt(world.message)},  # never federated
        },
        "!unknown:remote.org": {"m.read": {BOB: receipt(world.message)}},
    }
    await world.node.edus.on_edus(REMOTE, [edu("m.receipt", content)])
    now = world.node.receipts.current_position
    assert now == since + 1
    found = await world.node.receipts.receipts_for_rooms(ALICE, [world.room], since, now)
    assert found == {
        world.room: {
            "type": "m.receipt",
            "content": {world.message: {"m.read": {BOB: {"ts": 1234, "thread_id": "main"}}}},
        }
    }
    assert world.notifier.current_token.receipts == now
    assert world.node.sender.ephemeral == []


async def test_remote_receipt_for_an_unknown_event_is_not_stored(world: World) -> None:
    since = world.node.receipts.current_position
    content = {world.room: {"m.read": {BOB: receipt("$unknown")}}}
    await world.node.edus.on_edus(REMOTE, [edu("m.receipt", content)])
    assert world.node.receipts.current_position == since


# Inbound: to-device ------------------------------------------------------------------------


async def test_remote_to_device_reaches_local_devices_once(world: World) -> None:
    await world.add_device(ALICE, "ALICELAPTOP")
    message = {
        "sender": BOB,
        "type": "m.room.encrypted",
        "message_id": "m1",
        "messages": {
            ALICE: {ALICE_DEVICE: {"body": "for the phone"}, "*": {"body": "for all"}},
            DAN: {"*": {"body": "not ours"}},
        },
    }
    await world.node.edus.on_edus(REMOTE, [edu("m.direct_to_device", message)] * 2)
    # The same message ID from another server is another message.
    await world.node.edus.on_edus(
        "other.org",
        [edu("m.direct_to_device", {**message, "sender": DAN, "messages": {ALICE: {"*": {}}}})],
    )
    now = world.notifier.current_token.to_device
    phone, _ = await world.node.to_device.for_sync(ALICE, ALICE_DEVICE, 0, now)
    laptop, _ = await world.node.to_device.for_sync(ALICE, "ALICELAPTOP", 0, now)
    assert phone == [
        {"type": "m.room.encrypted", "sender": BOB, "content": {"body": "for the phone"}},
        {"type": "m.room.encrypted", "sender": DAN, "content": {}},
    ]
    assert laptop == [
        {"type": "m.room.encrypted", "sender": BOB, "content": {"body": "for all"}},
        {"type": "m.room.encrypted", "sender": DAN, "content": {}},
    ]


@pytest.mark.parametrize(
    "content",
    [
        {"sender": DAN},  # not of the origin
        {"message_id": ""},
        {"type": 5},
        {"messages": {ALICE: {ALICE_DEVICE: "text"}}},
        {"messages": {ALICE: {ALICE_DEVICE: {"big": "x" * 70_000}}}},
    ],
)
async def test_bad_to_device_is_ignored(world: World, content: JsonDict) -> None:
    message = {
        "sender": BOB,
        "type": "m.room.encrypted",
        "message_id": "m1",
        "messages": {ALICE: {ALICE_DEVICE: {}}},
    }
    before = world.notifier.current_token.to_device
    await world.node.edus.on_edus(REMOTE, [edu("m.direct_to_device", {**message, **content})])
    assert world.notifier.current_token.to_device == before


# Inbound: device lists and signing keys ----------------------------------------------------


def bob_devices(stream_id: int, *device_ids: str, **extra: Any) -> JsonDict:
    return {
        "user_id": BOB,
        "stream_id": stream_id,
        "devices": [{"device_id": d, "keys": device_keys(BOB, d)} for d in device_ids],
        **extra,
    }


async def query_bob(world: World) -> JsonDict:
    return await world.node.e2e_keys.query_keys(ALICE_REQUESTER, {BOB: []})


async def test_device_list_updates_follow_the_chain_and_a_gap_marks_stale(world: World) -> None:
    since = world.notifier.current_token
    # Never fetched: the first update cannot be applied; it marks the list stale.
    await world.node.edus.on_edus(REMOTE, [device_list_update(4, [3])])
    assert await changed_since(world, since) == [BOB]
    cached = await world.node.store.get_device_list(BOB)
    assert cached is not None and cached.stale and cached.stream_id is None
    # Without a fetcher nothing is known yet.
    assert list((await query_bob(world))["failures"]) == [REMOTE]

    calls: list[UserID] = []
    fetch = user_devices_fetcher({BOB: bob_devices(5, "BOBPHONE")}, calls)
    assert await world.node.edus.remote_device_lists.resync_stale(fetch) == 1
    assert calls == [BOB]
    assert (await query_bob(world))["device_keys"][BOB] == {
        "BOBPHONE": {**device_keys(BOB, "BOBPHONE"), "unsigned": {}}
    }

    # 6 follows 5: applied (a new device, with its name and keys).
    since = world.notifier.current_token
    update = device_list_update(
        6, [5], "BOBLAPTOP", keys=device_keys(BOB, "BOBLAPTOP"), device_display_name="laptop"
    )
    await world.node.edus.on_edus(REMOTE, [update])
    assert await changed_since(world, since) == [BOB]
    keys = (await query_bob(world))["device_keys"][BOB]
    assert sorted(keys) == ["BOBLAPTOP", "BOBPHONE"]
    assert keys["BOBLAPTOP"]["unsigned"] == {"device_display_name": "laptop"}
    # A repeat changes nothing and wakes nobody.
    since = world.notifier.current_token
    await world.node.edus.on_edus(REMOTE, [update])
    assert world.notifier.current_token == since
    # 7 deletes the phone.
    await world.node.edus.on_edus(REMOTE, [device_list_update(7, [6], "BOBPHONE", deleted=True)])
    assert sorted((await query_bob(world))["device_keys"][BOB]) == ["BOBLAPTOP"]
    cached = await world.node.store.get_device_list(BOB)
    assert cached is not None and (cached.stream_id, cached.stale) == (7, False)

    # 9 names 8, which never came: a gap. The list is stale and is fetched again.
    await world.node.edus.on_edus(REMOTE, [device_list_update(9, [8], "BOBTABLET")])
    cached = await world.node.store.get_device_list(BOB)
    assert cached is not None and cached.stale
    fetch = user_devices_fetcher({BOB: bob_devices(9, "BOBLAPTOP", "BOBTABLET")}, calls)
    assert await world.node.edus.remote_device_lists.resync_stale(fetch) == 1
    cached = await world.node.store.get_device_list(BOB)
    assert cached is not None and (cached.stream_id, cached.stale) == (9, False)
    assert [d.device_id for d in cached.devices] == ["BOBLAPTOP", "BOBTABLET"]
    # The chain goes on from the fetched stream_id.
    await world.node.edus.on_edus(REMOTE, [device_list_update(10, [9], "BOBTABLET", deleted=True)])
    cached = await world.node.store.get_device_list(BOB)
    assert cached is not None and (cached.stream_id, cached.stale) == (10, False)


async def test_empty_prev_id_on_a_known_list_is_a_gap(world: World) -> None:
    await world.node.store.replace_device_list(BOB, 5, [], {})
    await world.node.edus.on_edus(REMOTE, [device_list_update(6, [])])
    cached = await world.node.store.get_device_list(BOB)
    assert cached is not None and cached.stale


async def test_a_failed_resync_keeps_the_stale_list(world: World) -> None:
    await world.node.store.replace_device_list(BOB, 5, [RemoteDevice("OLD", None, None)], {})
    await world.node.store.mark_stale(BOB)
    calls: list[UserID] = []
    for answer in (ConnectionError("down"), {"user_id": CAROL, "stream_id": 1, "devices": []}):
        fetch = user_devices_fetcher({BOB: answer}, calls)
        assert not await world.node.edus.remote_device_lists.resync_user(BOB, fetch)
    cached = await world.node.store.get_device_list(BOB)
    assert cached is not None and cached.stale and cached.stream_id == 5


async def test_a_query_of_a_stale_list_fetches_it_first(world: World) -> None:
    calls: list[UserID] = []
    fetch = user_devices_fetcher(
        {BOB: bob_devices(3, "BOBPHONE"), CAROL: bob_devices(1, "X") | {"user_id": CAROL}},
        calls,
    )
    await world.restart(fetch_user_devices=fetch)
    result = await world.node.e2e_keys.query_keys(ALICE_REQUESTER, {BOB: ["BOBPHONE"], CAROL: []})
    assert sorted(calls) == [BOB, CAROL]
    assert sorted(result["device_keys"][BOB]) == ["BOBPHONE"]
    # BOB shares a room with ALICE: cached. CAROL does not: answered, not kept.
    assert (await world.node.store.get_device_list(BOB)) is not None
    assert (await world.node.store.get_device_list(CAROL)) is None
    await world.node.e2e_keys.query_keys(ALICE_REQUESTER, {BOB: []})
    assert len(calls) == 2


async def test_updates_about_users_nobody_here_shares_a_room_with_are_ignored(
    world: World,
) -> None:
    since = world.notifier.current_token
    carol_update = {"user_id": CAROL, "device_id": "C", "stream_id": 2, "prev_id": [1]}
    master = cross_signing_key(CAROL, "master", signing_key())
    await world.node.edus.on_edus(
        REMOTE,
        [
            edu("m.device_list_update", carol_update),
            edu("m.signing_key_update", {"user_id": CAROL, "master_key": master}),
            # Not a user of the origin.
            edu("m.device_list_update", {**carol_update, "user_id": DAN}),
        ],
    )
    assert world.notifier.current_token == since
    assert await world.node.store.get_device_list(CAROL) is None


async def test_signing_key_updates_replace_the_cached_keys(world: World) -> None:
    await world.node.store.replace_device_list(BOB, 5, [], {})
    master = cross_signing_key(BOB, "master", signing_key())
    self_signing = cross_signing_key(BOB, "self_signing", signing_key())
    since = world.notifier.current_token
    await world.node.edus.on_edus(
        REMOTE,
        [
            edu(
                "m.signing_key_update",
                {"user_id": BOB, "master_key": master, "self_signing_key": self_signing},
            ),
            # Bad: a key of someone else, a key for the wrong usage.
            edu("m.signing_key_update", {"user_id": BOB, "master_key": {**master, "user_id": DAN}}),
            edu("m.signing_key_update", {"user_id": BOB, "master_key": self_signing}),
        ],
    )
    assert await changed_since(world, since) == [BOB]
    result = await query_bob(world)
    assert result["master_keys"] == {BOB: master}
    assert result["self_signing_keys"] == {BOB: self_signing}


async def test_resync_forgets_users_no_longer_sharing_a_room(world: World) -> None:
    await world.node.store.mark_stale(CAROL)
    calls: list[UserID] = []
    fetch = user_devices_fetcher({}, calls)
    assert await world.node.edus.remote_device_lists.resync_stale(fetch) == 0
    assert calls == []
    assert await world.node.store.get_device_list(CAROL) is None


def test_parse_user_devices_leaves_out_malformed_devices() -> None:
    body = bob_devices(2, "A") | {
        "devices": [
            {"device_id": "A", "keys": device_keys(BOB, "A"), "device_display_name": "a"},
            {"device_id": "B"},
            {"device_id": "C", "keys": device_keys(CAROL, "C")},
            {"device_id": 5},
        ]
    }
    parsed = parse_user_devices(BOB, body)
    assert parsed is not None and parsed.stream_id == 2
    assert [(d.device_id, d.display_name, d.keys_json is None) for d in parsed.devices] == [
        ("A", "a", False),
        ("B", None, True),
    ]
    assert parse_user_devices(BOB, {**body, "stream_id": "2"}) is None
    assert parse_user_devices(BOB, {**body, "devices": {}}) is None
    assert parse_user_devices(BOB, [body]) is None


# Outbound ----------------------------------------------------------------------------------


async def test_local_typing_goes_to_every_other_server_in_the_room(world: World) -> None:
    await world.node.typing.set_typing(ALICE, ALICE, world.room, True)
    await world.node.typing.set_typing(ALICE, ALICE, world.room, False)
    await world.node.typing.set_typing(ALICE, ALICE, world.room, False)  # not typing: nothing
    await world.node.typing.set_typing(ALICE, ALICE, world.room, True, timeout_ms=1000)
    world.node.clock.now += 2
    await world.node.typing.expire_due()
    sent = [(d, t, c["typing"]) for d, t, c in world.node.sender.ephemeral]
    assert sent == [
        (server, "m.typing", typing)
        for typing in (True, False, True, False)
        for server in ("other.org", "remote.org")
    ]
    assert world.node.sender.ephemeral[0][2] == {
        "room_id": world.room,
        "user_id": ALICE,
        "typing": True,
    }
    assert world.node.sender.durable == []


async def test_local_read_receipts_go_out_and_private_ones_do_not(world: World) -> None:
    await world.node.receipts.send_receipt(ALICE, world.room, "m.read.private", world.message)
    assert world.node.sender.ephemeral == []
    await world.node.receipts.send_receipt(ALICE, world.room, "m.read", world.message, "main")
    await world.node.receipts.send_receipt(ALICE, world.room, "m.read", world.message, "main")
    assert [d for d, _, _ in world.node.sender.ephemeral] == ["other.org", "remote.org"]
    _, edu_type, content = world.node.sender.ephemeral[0]
    assert edu_type == "m.receipt"
    (data,) = [content[world.room]["m.read"][ALICE]]
    assert data["event_ids"] == [world.message]
    assert data["data"]["thread_id"] == "main" and isinstance(data["data"]["ts"], int)


async def test_local_to_device_for_remote_users_goes_to_their_servers_once(
    world: World,
) -> None:
    messages: dict[UserID, dict[str, JsonDict]] = {
        BOB: {"BOBPHONE": {"n": 1}},
        CAROL: {"*": {"n": 2}},
        DAN: {"*": {"n": 3}},
        ALICE: {ALICE_DEVICE: {"n": 4}},
    }
    await world.node.to_device.send(ALICE_REQUESTER, "m.room_key", "txn1", messages)
    await world.node.to_device.send(ALICE_REQUESTER, "m.room_key", "txn1", messages)  # a retry
    assert world.node.sender.ephemeral == []
    assert [(d, t) for d, t, _ in world.node.sender.durable] == [
        ("other.org", "m.direct_to_device"),
        ("remote.org", "m.direct_to_device"),
    ]
    other, remote = (c for _, _, c in world.node.sender.durable)
    assert other["messages"] == {DAN: {"*": {"n": 3}}}
    assert remote["messages"] == {BOB: {"BOBPHONE": {"n": 1}}, CAROL: {"*": {"n": 2}}}
    assert other["sender"] == ALICE and other["type"] == "m.room_key"
    assert other["message_id"] != remote["message_id"]
    assert all(len(c["message_id"]) <= 32 for c in (other, remote))
    now = world.notifier.current_token.to_device
    local, _ = await world.node.to_device.for_sync(ALICE, ALICE_DEVICE, 0, now)
    assert local == [{"type": "m.room_key", "sender": ALICE, "content": {"n": 4}}]


def device_updates(world: World) -> list[tuple[str, JsonDict]]:
    return [(d, c) for d, t, c in world.node.sender.durable if t == "m.device_list_update"]


async def test_local_device_changes_go_out_as_a_chain_that_survives_a_restart(
    world: World,
) -> None:
    await world.add_device(ALICE, "NEW")
    key = generate_signing_key("NEW")
    requester = Requester(ALICE, DeviceID("NEW"), 2)
    await world.node.e2e_keys.upload_keys(
        requester, {"device_keys": signed_device_keys(key, ALICE, "NEW")}
    )
    await world.delete_device(ALICE, "NEW")
    sent = device_updates(world)
    assert [d for d, _ in sent] == ["other.org", "remote.org"] * 3
    chain = [c for d, c in sent if d == REMOTE]
    assert [(c["stream_id"], c["prev_id"]) for c in chain] == [(1, []), (2, [1]), (3, [2])]
    assert all(c["user_id"] == ALICE and c["device_id"] == "NEW" for c in chain)
    assert "keys" not in chain[0] and "deleted" not in chain[0]
    assert chain[1]["keys"] == signed_device_keys(key, ALICE, "NEW")
    assert chain[2]["deleted"] is True and "keys" not in chain[2]

    answer = await world.node.edus.outbound_device_lists.user_devices(ALICE)
    assert answer == {
        "user_id": ALICE,
        "stream_id": 3,
        "devices": [{"device_id": ALICE_DEVICE}],
    }

    # After a restart the chain goes on where it was.
    node = await world.restart()
    await world.add_device(ALICE, "NEWER")
    updates = [c for d, t, c in node.sender.durable if d == REMOTE]
    assert [(c["stream_id"], c["prev_id"]) for c in updates] == [(4, [3])]


async def test_cross_signing_changes_go_out_as_signing_key_updates(world: World) -> None:
    master_key = signing_key()
    master = cross_signing_key(ALICE, "master", master_key)
    self_signing = sign_json(
        cross_signing_key(ALICE, "self_signing", signing_key()), ALICE, master_key
    )
    user_signing = sign_json(
        cross_signing_key(ALICE, "user_signing", signing_key()), ALICE, master_key
    )
    await world.node.e2e_keys.upload_cross_signing_keys(
        ALICE_REQUESTER, {"master_key": master, "self_signing_key": self_signing}
    )
    sent = [(d, c) for d, t, c in world.node.sender.durable if t == "m.signing_key_update"]
    assert sent == [
        (server, {"user_id": ALICE, "master_key": master, "self_signing_key": self_signing})
        for server in ("other.org", "remote.org")
    ]
    # A user-signing key alone is not sent to other servers.
    world.node.sender.clear()
    await world.node.e2e_keys.upload_cross_signing_keys(
        ALICE_REQUESTER, {"user_signing_key": user_signing}
    )
    assert world.node.sender.durable == []
    answer = await world.node.edus.outbound_device_lists.user_devices(ALICE)
    assert answer["master_key"] == master and answer["self_signing_key"] == self_signing
    assert "user_signing_key" not in answer


async def test_nothing_goes_out_for_users_who_share_no_room_with_other_servers(
    world: World,
) -> None:
    lonely = UserID("@lonely:example.org")
    await world.accounts.create_user(lonely, None, is_admin=False, created_ts=1)
    await world.add_device(lonely, "L")
    assert world.node.sender.durable == []
    assert (await world.node.edus.outbound_device_lists.user_devices(lonely))["stream_id"] == 0
    with pytest.raises(MatrixError, match="not a user of this server"):
        await world.node.edus.outbound_device_lists.user_devices(BOB)


async def test_remote_claims_go_to_each_users_server(world: World) -> None:
    asked: list[tuple[str, JsonDict]] = []

    async def claim(server: str, body: JsonDict) -> Any:
        asked.append((server, body))
        if server == "other.org":
            raise ConnectionError("down")
        return {
            "one_time_keys": {
                BOB: {"BOBPHONE": {"signed_curve25519:AAAA": {"key": "k"}}},
                ALICE: {ALICE_DEVICE: {"signed_curve25519:X": {"key": "forged"}}},
            }
        }

    await world.restart(claim_keys=claim)
    result = await world.node.e2e_keys.claim_keys(
        {BOB: {"BOBPHONE": "signed_curve25519"}, DAN: {"D": "signed_curve25519"}}
    )
    assert sorted(asked, key=lambda a: a[0]) == [
        ("other.org", {"one_time_keys": {DAN: {"D": "signed_curve25519"}}}),
        ("remote.org", {"one_time_keys": {BOB: {"BOBPHONE": "signed_curve25519"}}}),
    ]
    assert result["one_time_keys"] == {BOB: {"BOBPHONE": {"signed_curve25519:AAAA": {"key": "k"}}}}
    assert list(result["failures"]) == ["other.org"]
    assert result["failures"]["other.org"]["status"] == 503


async def test_other_servers_query_and_claim_only_local_users(world: World) -> None:
    key = generate_signing_key(ALICE_DEVICE)
    await world.node.e2e_keys.upload_keys(
        ALICE_REQUESTER,
        {
            "device_keys": signed_device_keys(key, ALICE, ALICE_DEVICE),
            "one_time_keys": {"signed_curve25519:a": sign_json({"key": "a"}, ALICE, key)},
        },
    )
    answer = await world.node.e2e_keys.federation_query_keys({ALICE: [], BOB: []})
    assert answer["device_keys"] == {
        ALICE: {ALICE_DEVICE: signed_device_keys(key, ALICE, ALICE_DEVICE)}
    }
    assert set(answer) == {"device_keys", "master_keys", "self_signing_keys"}
    claimed = await world.node.e2e_keys.federation_claim_keys(
        {ALICE: {ALICE_DEVICE: "signed_curve25519"}, BOB: {"X": "signed_curve25519"}}
    )
    assert list(claimed["one_time_keys"]) == [ALICE]


# RemoteDeviceStore on both backends --------------------------------------------------------


@pytest.fixture
async def database(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Database]:
    db: SqliteDatabase | PostgresDatabase
    if backend == "sqlite":
        db = await SqliteDatabase.open(str(tmp_path / "store.db"))
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        db = await PostgresDatabase.open(cluster.create_database("remote_devices"))
    try:
        await run_migrations(db)
        yield db
    finally:
        await db.close()


async def test_remote_device_store(database: Database) -> None:
    store = RemoteDeviceStore(database)
    assert await store.get_local_stream_id(ALICE) == 0
    assert await store.allocate_local_stream_ids(ALICE, 2) == 0
    assert await store.allocate_local_stream_ids(ALICE, 1) == 2
    assert await store.get_local_stream_id(ALICE) == 3

    assert await store.get_device_list(BOB) is None
    await store.mark_stale(BOB)
    listed = await store.get_device_list(BOB)
    assert listed is not None and (listed.stream_id, listed.stale, listed.devices) == (
        None,
        True,
        (),
    )
    assert await store.get_stale_users(10) == [BOB]
    phone = RemoteDevice("PHONE", "phone", '{"k":1}')
    await store.replace_device_list(BOB, 4, [phone], {"master": '{"m":1}'})
    assert await store.get_stale_users(10) == []
    await store.apply_update(BOB, 5, RemoteDevice("LAPTOP", None, None), deleted=False)
    await store.apply_update(BOB, 6, RemoteDevice("PHONE", None, None), deleted=True)
    await store.set_cross_signing_keys(BOB, {"self_signing": '{"s":1}', "master": '{"m":2}'})
    listed = await store.get_device_list(BOB)
    assert listed is not None
    assert (listed.stream_id, listed.stale) == (6, False)
    assert listed.devices == (RemoteDevice("LAPTOP", None, None),)
    assert listed.cross_signing == (("master", '{"m":2}'), ("self_signing", '{"s":1}'))
    await store.forget_device_list(BOB)
    assert await store.get_device_list(BOB) is None
    # Cross-signing keys of a user never fetched leave them stale.
    await store.set_cross_signing_keys(CAROL, {"master": "{}"})
    listed = await store.get_device_list(CAROL)
    assert listed is not None and listed.stale


async def test_started_it_fetches_stale_lists_in_the_background(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[UserID] = []
    node = await world.restart(
        fetch_user_devices=user_devices_fetcher({BOB: bob_devices(2, "BOBPHONE")}, calls)
    )
    stored = asyncio.Event()
    replace = node.store.replace_device_list

    async def replace_and_signal(*args: Any) -> None:
        await replace(*args)
        stored.set()

    monkeypatch.setattr(node.store, "replace_device_list", replace_and_signal)
    await node.edus.start()
    try:
        await node.edus.on_edus(REMOTE, [device_list_update(2, [1])])
        async with asyncio.timeout(5):
            await stored.wait()
    finally:
        await node.edus.stop()
    cached = await node.store.get_device_list(BOB)
    assert cached is not None and (cached.stream_id, cached.stale) == (2, False)
    assert calls == [BOB]
