"""AppServiceExtras over real storage on both backends: what one batch holds, how far it
reaches when it is full, and what an acknowledgement deletes (Application Service API,
"Pushing ephemeral data"; MSC2409; MSC3202).

The typing, presence and to-device services are the real ones over fake room state
(rooms known by who is joined); receipts and device list changes are written to their
stores and announced as the services do."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.appservice import write_registration
from peyvand.services.accounts.requester import Requester
from peyvand.services.appservice.extras import AppServiceExtras, ExtrasBatch, InterestedInRoom
from peyvand.services.appservice.registration import ApplicationService, parse_registration
from peyvand.services.appservice.registry import AppServiceRegistry
from peyvand.services.e2ee.to_device import ToDeviceService
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.presence import PresenceService
from peyvand.services.sync.streams import Stream, StreamToken
from peyvand.services.sync.typing import TypingService
from peyvand.storage.appservice_extras import AppServiceExtrasStore
from peyvand.storage.appservice_txns import AppServiceTxnStore
from peyvand.storage.database import Database
from peyvand.storage.device_lists import DeviceListStore
from peyvand.storage.receipts import ReceiptRow, ReceiptStore
from peyvand.storage.to_device import ToDeviceStore
from peyvand.types import DeviceID, EventID, RoomID, ServerName, UserID

SERVER = ServerName("example.org")
GHOST = UserID("@ghost_1:example.org")
OTHER_GHOST = UserID("@ghost_2:example.org")
ALICE = UserID("@alice:example.org")
BOB = UserID("@bob:example.org")
BRIDGED = RoomID("!bridged:example.org")
PRIVATE = RoomID("!private:example.org")
SENDER = Requester(ALICE, DeviceID("ALICEDEV"), 1)


def registration(appservice_id: str, **flags: Any) -> ApplicationService:
    info = {
        "id": appservice_id,
        "url": None,
        "as_token": f"as-{appservice_id}",
        "hs_token": f"hs-{appservice_id}",
        "sender_localpart": f"{appservice_id}bot",
        "namespaces": {"users": [{"exclusive": True, "regex": "@ghost_.*:example.org"}]},
        **flags,
    }
    return parse_registration(info, SERVER)


BRIDGE = registration("bridge", receive_ephemeral=True, **{"org.matrix.msc3202": True})
PLAIN = registration("plain")
# Also receives to-device messages of @ghost_2 (a namespace that is not exclusive).
WATCHER = registration(
    "watcher",
    receive_ephemeral=True,
    namespaces={"users": [{"exclusive": False, "regex": "@ghost_2:example.org"}]},
)


class Snapshot:
    def __init__(self, joined: set[UserID]) -> None:
        self.memberships = dict.fromkeys(joined, "join")

    def joined_view(self) -> set[UserID]:
        return set(self.memberships)


class ReceiptPositions:
    """The receipts service's position, moved by ``World.receipt``."""

    current_position = 0


class Rooms:
    """Room state and the room index, as far as these services read them."""

    def __init__(self) -> None:
        self.joined = {BRIDGED: {GHOST, ALICE}, PRIVATE: {ALICE, BOB}}

    async def get_room(self, room_id: RoomID) -> Snapshot | None:
        members = self.joined.get(room_id)
        return None if members is None else Snapshot(members)

    async def memberships(self, user_id: UserID) -> dict[RoomID, tuple[str, int]]:
        return {r: ("join", 1) for r, members in self.joined.items() if user_id in members}


async def interested_in_room(appservice: ApplicationService, room_id: RoomID) -> bool:
    """A room with one of the appservice's users joined."""
    return room_id == BRIDGED


class World:
    """The extras and the services feeding them, over one database."""

    def __init__(
        self,
        db: Database,
        interest: InterestedInRoom = interested_in_room,
        services: Sequence[ApplicationService] = (BRIDGE, PLAIN, WATCHER),
        registry: AppServiceRegistry | None = None,
    ) -> None:
        self.db = db
        self.rooms = Rooms()
        self.notifier = Notifier(StreamToken())
        self.typing = TypingService(self.notifier, self.rooms)  # type: ignore[arg-type]
        self.presence = PresenceService(SERVER, self.rooms, self.rooms, self.notifier)  # type: ignore[arg-type]
        self.to_device = ToDeviceService(SERVER, ToDeviceStore(db), self.notifier)
        self.receipts = ReceiptStore(db)
        self.receipt_positions = ReceiptPositions()
        self.device_lists = DeviceListStore(db)
        self.registry = registry or AppServiceRegistry([], SERVER, services=list(services))
        self.interest = interest
        self.woken: list[str] = []
        self.extras = self.restart()
        self._position = 0

    def restart(self) -> AppServiceExtras:
        """New extras over the same database and services (what a restart makes)."""
        self.extras = AppServiceExtras(
            self.registry,
            AppServiceExtrasStore(self.db),
            self.notifier,
            self.typing,
            self.receipt_positions,  # type: ignore[arg-type]
            self.presence,
            self.rooms,  # type: ignore[arg-type]
            self.interest,
        )
        self.extras.wake.append(self.woken.append)
        self.typing.change_hooks[:] = [self.extras.on_typing]
        self.presence.change_hooks[:] = [self.extras.on_presence]
        self.to_device.stored_hooks[:] = [self.extras.on_to_device]
        return self.extras

    async def start(self) -> None:
        await self.to_device.start()
        await self.db.executemany(
            "INSERT INTO devices (user_id, device_id) VALUES ($1, $2)",
            [(GHOST, f"G{n}") for n in range(12)] + [(OTHER_GHOST, "O"), (BOB, "B")],
        )

    async def store_acknowledgement(self, appservice: ApplicationService, position: str) -> None:
        """What the sender commits when the appservice answered 200."""
        await AppServiceTxnStore(self.db).add([appservice.id], 0)
        await self.db.execute(
            "UPDATE appservice_positions SET extras_position = $2 WHERE appservice_id = $1",
            appservice.id,
            position,
        )

    async def acknowledge(self, appservice: ApplicationService, position: str) -> None:
        await self.store_acknowledgement(appservice, position)
        await self.extras.acknowledged(appservice, position)

    async def log_in(self, user_id: UserID, device_id: str) -> None:
        """An access token for the device: it syncs itself."""
        await self.db.execute(
            "INSERT INTO access_tokens (id, token, user_id, device_id, created_ts)"
            " VALUES ($1, $2, $3, $4, 1)",
            abs(hash((user_id, device_id))) % 2**31,
            f"token-{user_id}-{device_id}",
            user_id,
            device_id,
        )

    async def send(self, messages: dict[UserID, dict[str, Any]], txn: str) -> None:
        await self.to_device.send(SENDER, "m.test", txn, messages)

    async def receipt(self, receipt_type: str, user_id: UserID, room_id: RoomID) -> None:
        self._position += 1
        row = ReceiptRow(room_id, receipt_type, user_id, "", EventID(f"$e{self._position}"), 1)
        await self.receipts.upsert_receipt(row, self._position, self._position)
        self.receipt_positions.current_position = self._position
        self.extras.on_receipt(row, self._position)

    async def device_list_change(self, user_id: UserID) -> None:
        self._position = await self.device_lists.add_change(user_id, self._position)
        self.notifier.advance(Stream.DEVICE_LISTS, self._position, ())
        self.extras.on_device_list_changed(user_id)

    async def inbox(self, user_id: UserID, device_id: str) -> list[Any]:
        found = await ToDeviceStore(self.db).get_messages(user_id, device_id, 0, 2**62, 100)
        return [m.message["content"] for m in found]


@pytest.fixture
async def world(database: Database) -> World:
    world = World(database)
    await world.start()
    return world


def ephemeral_of(batch: ExtrasBatch, event_type: str) -> list[Any]:
    return [e for e in batch.fields.get("ephemeral", []) if e["type"] == event_type]


async def test_to_device_is_paged_by_send(world: World) -> None:
    await world.send({GHOST: {"G0": {"n": 0}}}, "before")
    # A first start begins now: what was stored before is not sent.
    first = await world.extras.collect(BRIDGE, None, 2)
    assert first.count == 0
    for n in (1, 2, 3):
        await world.send({GHOST: {"G0": {"n": n}}, BOB: {"B": {"n": n}}}, f"t{n}")
    world.woken.clear()
    batch = await world.extras.collect(BRIDGE, first.position, 2)
    messages = batch.fields["de.sorunome.msc2409.to_device"]
    assert [(m["to_user_id"], m["to_device_id"], m["content"]) for m in messages] == [
        (GHOST, "G0", {"n": 1}),
        (GHOST, "G0", {"n": 2}),
    ]
    assert messages[0]["type"] == "m.test" and messages[0]["sender"] == ALICE
    assert batch.count == 2
    # Stopped before the end: the sender is woken to come back for the rest.
    assert world.woken == ["bridge"]
    rest = await world.extras.collect(BRIDGE, batch.position, 2)
    assert [m["content"] for m in rest.fields["de.sorunome.msc2409.to_device"]] == [{"n": 3}]
    # An unreadable position acknowledges nothing.
    await world.extras.acknowledged(BRIDGE, "not_a_position")


# Watches @bob, an ordinary user, in a namespace that is not exclusive.
BOB_WATCHER = registration(
    "bobwatcher",
    receive_ephemeral=True,
    namespaces={"users": [{"exclusive": False, "regex": "@bob:example.org"}]},
)


async def test_an_acknowledgement_never_deletes_messages_of_devices_that_sync(
    database: Database,
) -> None:
    world = World(database, services=(BRIDGE, BOB_WATCHER))
    await world.start()
    await world.log_in(BOB, "B")
    # A ghost that logged in with a device of its own, and one the bridge manages.
    await world.log_in(GHOST, "G0")
    bridge = await world.extras.collect(BRIDGE, None, 10)
    watcher = await world.extras.collect(BOB_WATCHER, None, 10)
    await world.send(
        {BOB: {"B": {"key": "b"}}, GHOST: {"G0": {"key": "g0"}, "G1": {"key": "g1"}}}, "t"
    )
    bridge = await world.extras.collect(BRIDGE, bridge.position, 10)
    watcher = await world.extras.collect(BOB_WATCHER, watcher.position, 10)
    assert bridge.count == 2 and watcher.count == 1
    await world.acknowledge(BRIDGE, bridge.position)
    await world.acknowledge(BOB_WATCHER, watcher.position)
    # Their own /sync delivers (and deletes) them.
    assert await world.inbox(BOB, "B") == [{"key": "b"}]
    assert await world.inbox(GHOST, "G0") == [{"key": "g0"}]
    # No one syncs as G1: delivered to the only appservice acting for its user.
    assert await world.inbox(GHOST, "G1") == []


async def test_messages_two_appservices_receive_are_deleted_once_both_acknowledged(
    database: Database,
) -> None:
    world = World(database, services=(BRIDGE, WATCHER))
    await world.start()
    bridge = await world.extras.collect(BRIDGE, None, 10)
    watcher = await world.extras.collect(WATCHER, None, 10)
    await world.send({OTHER_GHOST: {"O": {"n": 1}}, GHOST: {"G1": {"n": 1}}}, "t")
    bridge = await world.extras.collect(BRIDGE, bridge.position, 10)
    watcher = await world.extras.collect(WATCHER, watcher.position, 10)
    await world.acknowledge(BRIDGE, bridge.position)
    assert await world.inbox(GHOST, "G1") == []
    # The watcher has not had it yet.
    assert await world.inbox(OTHER_GHOST, "O") == [{"n": 1}]
    await world.acknowledge(WATCHER, watcher.position)
    assert await world.inbox(OTHER_GHOST, "O") == []


async def test_what_a_crash_after_the_acknowledgement_left_is_deleted_after_a_restart(
    database: Database,
) -> None:
    world = World(database, services=(BRIDGE,))
    await world.start()
    start = await world.extras.collect(BRIDGE, None, 10)
    await world.send({GHOST: {"G1": {"n": 1}}}, "t")
    batch = await world.extras.collect(BRIDGE, start.position, 10)
    # The acknowledgement is committed, then the server dies.
    await world.store_acknowledgement(BRIDGE, batch.position)
    extras = world.restart()
    empty = await extras.collect(BRIDGE, batch.position, 10)
    assert empty.count == 0
    await world.acknowledge(BRIDGE, empty.position)
    assert await world.inbox(GHOST, "G1") == []


async def test_one_send_to_more_devices_than_a_page_comes_whole(world: World) -> None:
    start = await world.extras.collect(BRIDGE, None, 1)
    await world.send({GHOST: {"*": {"all": True}}}, "everyone")
    await world.send({OTHER_GHOST: {"O": {"next": True}}}, "next")
    batch = await world.extras.collect(BRIDGE, start.position, 1)
    devices = [m["to_device_id"] for m in batch.fields["de.sorunome.msc2409.to_device"]]
    assert sorted(devices) == sorted(f"G{n}" for n in range(12))
    after = await world.extras.collect(BRIDGE, batch.position, 1)
    assert [m["to_user_id"] for m in after.fields["de.sorunome.msc2409.to_device"]] == [OTHER_GHOST]
    # Another appservice gets @ghost_2's messages too: they are kept for it.
    await world.extras.acknowledged(BRIDGE, after.position)
    assert await world.inbox(OTHER_GHOST, "O") == [{"next": True}]


async def test_typing_receipts_and_presence_of_rooms_of_interest(world: World) -> None:
    start = await world.extras.collect(BRIDGE, None, 10)
    await world.typing.set_remote_typing(ALICE, BRIDGED, True)
    await world.typing.set_remote_typing(BOB, PRIVATE, True)
    await world.receipt("m.read", ALICE, BRIDGED)
    await world.receipt("m.read.private", ALICE, BRIDGED)
    await world.receipt("m.read.private", GHOST, BRIDGED)
    await world.receipt("m.read", BOB, PRIVATE)
    await world.presence.set_status(ALICE, ALICE, "online", "here")
    await world.presence.set_status(BOB, BOB, "online", "elsewhere")

    batch = await world.extras.collect(BRIDGE, start.position, 10)
    assert ephemeral_of(batch, "m.typing") == [
        {"type": "m.typing", "content": {"user_ids": [ALICE]}, "room_id": BRIDGED}
    ]
    [receipts] = ephemeral_of(batch, "m.receipt")
    assert receipts["room_id"] == BRIDGED
    # Everyone's public receipts; private ones only of the appservice's users.
    assert receipts["content"]["$e1"]["m.read"] == {ALICE: {"ts": 1}}
    assert "$e2" not in receipts["content"]
    assert receipts["content"]["$e3"]["m.read.private"] == {GHOST: {"ts": 1}}
    [presence] = ephemeral_of(batch, "m.presence")
    assert presence["sender"] == ALICE and presence["content"]["status_msg"] == "here"
    assert batch.fields["de.sorunome.msc2409.ephemeral"] == batch.fields["ephemeral"]
    assert batch.count == 3

    # Nothing new: an empty batch.
    again = await world.extras.collect(BRIDGE, batch.position, 10)
    assert again.count == 0 and again.fields == {}


async def every_room(appservice: ApplicationService, room_id: RoomID) -> bool:
    return True


async def test_a_full_ephemeral_batch_continues_where_it_stopped(database: Database) -> None:
    world = World(database, every_room)
    await world.start()
    rooms = [RoomID(f"!r{n}:example.org") for n in range(5)]
    start = await world.extras.collect(BRIDGE, None, 2)
    for room_id in rooms:
        await world.receipt("m.read", GHOST, room_id)
    seen: list[RoomID] = []
    position = start.position
    for _ in range(5):
        batch = await world.extras.collect(BRIDGE, position, 2)
        assert batch.count <= 2
        seen += [e["room_id"] for e in ephemeral_of(batch, "m.receipt")]
        position = batch.position
        if not batch.count:
            break
    assert seen == rooms


async def test_device_lists_and_key_counts_for_msc3202(world: World) -> None:
    start = await world.extras.collect(BRIDGE, None, 10)
    await world.device_list_change(ALICE)  # shares the bridged room
    await world.device_list_change(BOB)  # shares no room of interest
    await world.db.execute(
        "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json,"
        " ts_added_ms) VALUES ($1, 'G1', 'signed_curve25519', 'k1', '{}', 1),"
        " ($1, 'G1', 'signed_curve25519', 'k2', '{}', 1)",
        GHOST,
    )
    await world.db.execute(
        "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json)"
        " VALUES ($1, 'G1', 'signed_curve25519', 'f1', '{}')",
        GHOST,
    )
    world.extras.on_keys_changed([(GHOST, DeviceID("G1")), (BOB, DeviceID("B"))])

    batch = await world.extras.collect(BRIDGE, start.position, 10)
    assert batch.fields["org.matrix.msc3202.device_lists"] == {"changed": [ALICE], "left": []}
    counts = batch.fields["org.matrix.msc3202.device_one_time_keys_count"]
    # Every device of the user whose keys changed; BOB is not the appservice's.
    assert set(counts) == {GHOST}
    assert counts[GHOST]["G1"] == {"signed_curve25519": 2}
    assert counts[GHOST]["G0"] == {}
    assert batch.fields["org.matrix.msc3202.device_one_time_key_counts"] == counts
    fallback = batch.fields["org.matrix.msc3202.device_unused_fallback_key_types"]
    assert fallback[GHOST]["G1"] == ["signed_curve25519"] and fallback[GHOST]["G0"] == []
    assert batch.count == 2


async def test_an_appservice_without_the_flags_gets_none_of_it(world: World) -> None:
    start = await world.extras.collect(PLAIN, None, 10)
    world.woken.clear()
    await world.send({GHOST: {"G0": {"n": 1}}}, "t1")
    await world.typing.set_remote_typing(ALICE, BRIDGED, True)
    await world.device_list_change(ALICE)
    assert "plain" not in world.woken
    batch = await world.extras.collect(PLAIN, start.position, 10)
    assert (batch.fields, batch.count) == ({}, 0)
    # Its acknowledgement deletes nothing either.
    await world.extras.acknowledged(PLAIN, batch.position)
    assert await world.inbox(GHOST, "G0") == [{"n": 1}]


async def test_an_unreadable_position_starts_now(world: World) -> None:
    await world.send({GHOST: {"G0": {"n": 1}}}, "t1")
    batch = await world.extras.collect(BRIDGE, "1_2_x", 10)
    assert batch.count == 0


async def test_receipts_presence_and_device_lists_wake_only_appservices_that_may_want_them(
    database: Database,
) -> None:
    interesting = {BRIDGED}

    async def interest(appservice: ApplicationService, room_id: RoomID) -> bool:
        return room_id in interesting

    world = World(database, interest)
    await world.start()
    start = await world.extras.collect(BRIDGE, None, 10)
    # Unknown yet: the first receipt in the room the bridge is not in wakes it.
    await world.receipt("m.read", BOB, PRIVATE)
    await world.presence.set_status(BOB, BOB, "online", None)
    await world.device_list_change(BOB)
    assert world.woken.count("bridge") == 3
    batch = await world.extras.collect(BRIDGE, start.position, 10)
    assert batch.count == 0
    # Its collect found neither the room nor @bob of interest: answered from memory now.
    world.woken.clear()
    await world.receipt("m.read", BOB, PRIVATE)
    await world.presence.set_status(BOB, BOB, "unavailable", None)
    await world.device_list_change(BOB)
    await world.typing.set_remote_typing(BOB, PRIVATE, True)
    assert "bridge" not in world.woken
    # Its own user's private receipt, and the room it is in, still wake it.
    await world.receipt("m.read.private", GHOST, PRIVATE)
    assert world.woken.count("bridge") == 1
    await world.receipt("m.read", ALICE, BRIDGED)
    assert world.woken.count("bridge") == 2
    # A ghost joins the room: the join comes in a transaction, whose collect asks again.
    interesting.add(PRIVATE)
    joined = await world.extras.collect(BRIDGE, batch.position, 10)
    assert [e["room_id"] for e in ephemeral_of(joined, "m.receipt")] == [PRIVATE, BRIDGED]
    world.woken.clear()
    await world.receipt("m.read", BOB, PRIVATE)
    await world.presence.set_status(BOB, BOB, "online", None)
    assert world.woken.count("bridge") == 2


async def test_what_a_failed_deletion_left_is_deleted_by_the_next_acknowledgement(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(database, services=(BRIDGE,))
    await world.start()
    start = await world.extras.collect(BRIDGE, None, 10)
    await world.acknowledge(BRIDGE, start.position)
    await world.send({GHOST: {"G1": {"n": 1}}}, "t")
    batch = await world.extras.collect(BRIDGE, start.position, 10)
    store = AppServiceExtrasStore(database)

    async def unavailable(*args: Any) -> None:
        raise ConnectionError("database unavailable")

    monkeypatch.setattr(world.extras, "_store", store)
    monkeypatch.setattr(store, "delete_unattended_inbox", unavailable)
    with pytest.raises(ConnectionError):
        await world.acknowledge(BRIDGE, batch.position)
    monkeypatch.undo()
    empty = await world.extras.collect(BRIDGE, batch.position, 10)
    await world.acknowledge(BRIDGE, empty.position)
    assert await world.inbox(GHOST, "G1") == []


async def test_a_collect_that_failed_leaves_the_appservice_woken(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = await world.extras.collect(BRIDGE, None, 10)
    await world.receipt("m.read", ALICE, BRIDGED)
    store = AppServiceExtrasStore(world.db)

    async def unavailable(*args: Any) -> None:
        raise ConnectionError("database unavailable")

    monkeypatch.setattr(world.extras, "_store", store)
    monkeypatch.setattr(store, "receipts_between", unavailable)
    world.woken.clear()
    with pytest.raises(ConnectionError):
        await world.extras.collect(BRIDGE, start.position, 10)
    # The sender asks again after its backoff, not only at the next change.
    assert world.woken == ["bridge"]


async def test_a_reload_that_changed_nothing_keeps_what_was_found_of_no_interest(
    database: Database, tmp_path: Path
) -> None:
    path = write_registration(
        tmp_path / "bridge.yaml",
        appservice_id="bridge",
        url=None,
        as_token="as-bridge",
        hs_token="hs-bridge",
        sender_localpart="bridgebot",
        user_regex="@ghost_.*:example.org",
        receive_ephemeral=True,
    )
    registry = AppServiceRegistry([path], SERVER)
    world = World(database, registry=registry)
    await world.start()
    [bridge] = registry.services
    start = await world.extras.collect(bridge, None, 10)
    await world.receipt("m.read", BOB, PRIVATE)
    await world.extras.collect(bridge, start.position, 10)
    registry.reload()
    assert registry.services[0] is not bridge
    world.woken.clear()
    await world.receipt("m.read", BOB, PRIVATE)
    assert world.woken == []
