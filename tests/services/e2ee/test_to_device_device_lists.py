"""ToDeviceService and DeviceListService with counting fake stores: an idle sync costs no
query, a woken one reads only what is new (DESIGN.md, "Sync")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from peyvand.services.accounts.requester import Requester
from peyvand.services.e2ee.device_lists import MAX_LOGGED_CHANGES, DeviceListService
from peyvand.services.e2ee.to_device import MAX_PER_SYNC, ToDeviceService
from peyvand.services.sync.notifier import Notifier
from peyvand.services.sync.streams import StreamToken
from peyvand.services.timeline.room_index import RoomIndex
from peyvand.storage.device_lists import MembershipChange
from peyvand.storage.to_device import InboxMessage, InboxRow
from peyvand.types import DeviceID, JsonDict, RoomID, ServerName, UserID

ALICE = UserID("@alice:example.org")
BOB = UserID("@bob:example.org")
CAROL = UserID("@carol:example.org")
ROOM = RoomID("!room:example.org")
DEVICE = "BOBDEVICE"


class FakeInbox:
    """The ToDeviceStore, in memory, counting the statements a sync would run."""

    def __init__(self, position: int = 0) -> None:
        self.position = position
        self.rows: list[tuple[UserID, str, int, JsonDict]] = []
        self.txns: set[tuple[str, str, str]] = set()
        self.reads = 0
        self.deletes = 0

    async def get_position(self) -> int:
        return self.position

    async def get_device_ids(self, user_ids: Sequence[UserID]) -> dict[UserID, set[str]]:
        return {BOB: {DEVICE}} if BOB in user_ids else {}

    async def add_messages(
        self, sender: UserID, device: str, txn_id: str, position: int, rows: Sequence[InboxRow]
    ) -> bool:
        if (sender, device, txn_id) in self.txns:
            return False
        self.txns.add((sender, device, txn_id))
        self.rows.extend((r.user_id, r.device_id, position, {"m": r.message}) for r in rows)
        self.position = position
        return True

    async def get_messages(
        self, user_id: UserID, device_id: str, after: int, until: int, limit: int
    ) -> list[InboxMessage]:
        self.reads += 1
        found = [
            InboxMessage(p, m)
            for u, d, p, m in self.rows
            if (u, d) == (user_id, device_id) and after < p <= until
        ]
        return found[:limit]

    async def delete_messages(self, user_id: UserID, device_id: str, up_to: int) -> None:
        self.deletes += 1
        self.rows = [r for r in self.rows if (r[0], r[1]) != (user_id, device_id) or r[2] > up_to]

    async def delete_devices(self, user_id: UserID, device_ids: Sequence[str]) -> None:
        self.rows = [r for r in self.rows if r[0] != user_id or r[1] not in device_ids]


async def to_device_service(store: FakeInbox) -> tuple[ToDeviceService, Notifier]:
    notifier = Notifier(StreamToken())
    service = ToDeviceService("example.org", store, notifier)  # type: ignore[arg-type]
    await service.start()
    return service, notifier


async def send(service: ToDeviceService, txn_id: str, n: int = 0) -> None:
    sender = Requester(ALICE, DeviceID("ALICEDEVICE"), 1)
    await service.send(sender, "m.test", txn_id, {BOB: {DEVICE: {"n": n}}})


async def test_idle_syncs_run_no_statement() -> None:
    store = FakeInbox()
    service, _ = await to_device_service(store)
    await service.acknowledge(BOB, DEVICE, 0)
    assert await service.for_sync(BOB, DEVICE, 0, 0) == ([], 0)
    # Another device's message moves the stream; this device still reads nothing.
    await service.send(Requester(ALICE, DeviceID("A"), 1), "m.test", "t", {CAROL: {"*": {}}})
    assert await service.for_sync(BOB, DEVICE, 0, 1) == ([], 1)
    await service.acknowledge(BOB, DEVICE, 1)
    await service.acknowledge(BOB, DEVICE, 1)
    assert (store.reads, store.deletes) == (0, 1)  # the one delete: nothing known yet


async def test_delivery_reads_once_and_acknowledgement_deletes_once() -> None:
    store = FakeInbox()
    service, notifier = await to_device_service(store)
    await send(service, "t1")
    now = notifier.current_token.to_device
    events, position = await service.for_sync(BOB, DEVICE, 0, now)
    assert len(events) == 1 and position == now and store.reads == 1
    await service.acknowledge(BOB, DEVICE, position)
    await service.acknowledge(BOB, DEVICE, position)
    assert await service.for_sync(BOB, DEVICE, position, now) == ([], now)
    assert (store.reads, store.deletes, store.rows) == (1, 1, [])
    # A retried transaction sends nothing and does not move the stream.
    await send(service, "t1")
    assert notifier.current_token.to_device == now


async def test_pages_stop_the_token_at_the_last_message() -> None:
    store = FakeInbox()
    service, notifier = await to_device_service(store)
    for n in range(MAX_PER_SYNC + 5):
        await send(service, f"t{n}", n)
    now = notifier.current_token.to_device
    first, position = await service.for_sync(BOB, DEVICE, None, now)
    assert len(first) == MAX_PER_SYNC and position == MAX_PER_SYNC
    rest, position = await service.for_sync(BOB, DEVICE, position, now)
    assert len(rest) == 5 and position == now


async def test_after_a_restart_old_messages_are_read_and_acknowledged_once() -> None:
    store = FakeInbox(position=7)
    store.rows = [(BOB, DEVICE, 7, {"old": True})]
    service, _ = await to_device_service(store)
    assert await service.for_sync(BOB, DEVICE, 3, 7) == ([{"old": True}], 7)
    await service.acknowledge(BOB, DEVICE, 7)
    await service.acknowledge(BOB, DEVICE, 7)
    assert await service.for_sync(BOB, DEVICE, 7, 7) == ([], 7)
    assert (store.reads, store.deletes, store.rows) == (1, 1, [])


@dataclass
class FakeLists:
    position: int = 0
    changes: list[tuple[int, UserID]] = field(default_factory=list)
    memberships: list[MembershipChange] = field(default_factory=list)
    range_reads: int = 0
    membership_reads: int = 0

    async def get_max_position(self) -> int:
        return self.position

    async def add_change(self, user_id: UserID, above: int) -> int:
        position = max([above, *(p for p, _ in self.changes)]) + 1
        self.changes.append((position, user_id))
        return position

    async def get_changed_users(self, after: int, until: int) -> set[UserID]:
        self.range_reads += 1
        return {u for p, u in self.changes if after < p <= until}

    async def get_membership_changes(
        self, room_ids: Sequence[RoomID], after: int, until: int
    ) -> list[MembershipChange]:
        self.membership_reads += 1
        return self.memberships


class FakeEvents:
    """The EventStore reads of the RoomIndex: everyone is joined to ROOM at position 1."""

    async def get_max_stream_ordering(self) -> int:
        return 1

    async def get_memberships_for_user(self, user_id: UserID) -> dict[RoomID, tuple[str, int]]:
        return {ROOM: ("join", 1)} if user_id != CAROL else {}

    async def get_rooms_with_events_since(
        self, room_ids: Sequence[RoomID], since: int, until: int
    ) -> set[RoomID]:
        return set()


@dataclass
class FakeSnapshot:
    memberships: dict[UserID, str]


class FakeState:
    async def get_room(self, room_id: RoomID) -> FakeSnapshot:
        return FakeSnapshot({ALICE: "join", BOB: "join"})


async def device_list_service(store: FakeLists) -> tuple[DeviceListService, Notifier]:
    notifier = Notifier(StreamToken(events=1))
    index = RoomIndex(FakeEvents())  # type: ignore[arg-type]
    await index.start()
    service = DeviceListService(
        ServerName("example.org"),
        store,  # type: ignore[arg-type]
        index,
        FakeState(),  # type: ignore[arg-type]
        notifier,
    )
    await service.start()
    return service, notifier


async def test_device_list_changes_from_memory() -> None:
    store = FakeLists()
    service, notifier = await device_list_service(store)
    since = notifier.current_token
    assert not await service.changes(ALICE, since, since)

    await service.notify_user_changed(BOB)
    await service.notify_user_changed(CAROL)  # shares no room with Alice
    now = notifier.current_token
    result = await service.changes(ALICE, since, now)
    assert (result.changed, result.left) == ([BOB], [])
    assert (store.range_reads, store.membership_reads) == (0, 0)


async def test_device_list_changes_before_the_log_are_read() -> None:
    store = FakeLists(position=5, changes=[(4, BOB)])
    service, notifier = await device_list_service(store)
    old = StreamToken(events=1, device_lists=3)
    assert (await service.changes(ALICE, old, notifier.current_token)).changed == [BOB]
    assert store.range_reads == 1


async def test_device_list_log_is_bounded() -> None:
    store = FakeLists()
    service, notifier = await device_list_service(store)
    for _ in range(MAX_LOGGED_CHANGES + 1):
        await service.notify_user_changed(BOB)
    now = notifier.current_token
    recent = StreamToken(events=1, device_lists=now.device_lists - 1)
    assert (await service.changes(ALICE, recent, now)).changed == [BOB]
    assert store.range_reads == 0
    result = await service.changes(ALICE, StreamToken(events=1, device_lists=1), now)
    assert result.changed == [BOB] and store.range_reads == 1
