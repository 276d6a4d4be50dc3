"""FederationEdus and the E2EE EDU handlers over the real services on a SQLite database,
with a fake sender that records what would go out. No network: fetches of other servers
are fakes too.

The room is made with the real event pipeline: ALICE (local) creates it, public, and
BOB (remote.org) and DAN (other.org) join; CAROL (remote.org) never does.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from signedjson.key import (
    decode_signing_key_base64,
    encode_signing_key_base64,
    generate_signing_key,
)
from signedjson.types import SigningKey

from peyvand.events.room_versions import ROOM_V12
from peyvand.events.signing import sign_json, verify_key_base64
from peyvand.services.accounts.auth import AuthService
from peyvand.services.accounts.requester import Requester
from peyvand.services.e2ee.device_lists import DeviceListService
from peyvand.services.e2ee.keys import E2eKeysService
from peyvand.services.e2ee.remote_device_lists import UserDevicesFetcher
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
from peyvand.services.timeline.stream_tracker import EventPositions, StreamTracker
from peyvand.storage.account_data import AccountDataStore
from peyvand.storage.accounts import AccountStore, DeviceRow
from peyvand.storage.device_lists import DeviceListStore
from peyvand.storage.e2e_keys import E2eKeyStore
from peyvand.storage.events import EventStore
from peyvand.storage.migrations import run_migrations
from peyvand.storage.receipts import ReceiptStore
from peyvand.storage.relations import RelationStore
from peyvand.storage.remote_devices import RemoteDeviceStore
from peyvand.storage.sqlite import SqliteDatabase
from peyvand.storage.to_device import ToDeviceStore
from peyvand.types import DeviceID, EventID, JsonDict, RoomID, ServerName, UserID

ALICE = UserID("@alice:example.org")
ALICE_DEVICE = DeviceID("ALICEPHONE")
ALICE_REQUESTER = Requester(ALICE, ALICE_DEVICE, 1)
BOB = UserID("@bob:remote.org")
CAROL = UserID("@carol:remote.org")
DAN = UserID("@dan:other.org")
REMOTE = ServerName("remote.org")


@dataclass
class FakeSender:
    """Records the EDUs FederationSender would send."""

    ephemeral: list[tuple[str, str, JsonDict]] = field(default_factory=list)
    durable: list[tuple[str, str, JsonDict]] = field(default_factory=list)

    async def send_edu(
        self, destination: str, edu_type: str, content: JsonDict, *, durable: bool
    ) -> None:
        (self.durable if durable else self.ephemeral).append((destination, edu_type, content))

    def send_ephemeral(self, destinations: Iterable[str], edu_type: str, content: JsonDict) -> None:
        self.ephemeral.extend((d, edu_type, content) for d in destinations)

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
        receipts = ReceiptService(
            ReceiptStore(db),
            account_data,
            state,
            notifier,
            relations=RelationStore(db).relations_of,
        )
        to_device = ToDeviceService(ServerName("example.org"), ToDeviceStore(db), notifier)
        device_lists = DeviceListService(
            ServerName("example.org"), DeviceListStore(db), self.index, state, notifier
        )
        e2e_keys = E2eKeysService(
            ServerName("example.org"),
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
            ServerName("example.org"),
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


@contextlib.asynccontextmanager
async def open_world(tmp_path: Path) -> AsyncIterator[World]:
    """A SQLite database with ALICE's public room, which BOB and DAN have joined, and
    one message from ALICE in it; the services of one start (``World.restart``)."""
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
        positions: EventPositions = StreamTracker()
        dispatcher = EventDispatcher(ServerName("example.org"), state, index, notifier, positions)
        writer = EventWriter(db, event_store, dispatcher.on_persisted, dispatcher.on_failed)
        events = EventCreationService(
            ServerName("example.org"),
            generate_signing_key("a"),
            event_store,
            state,
            writer,
            positions=positions,
        )
        await events.start()
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
