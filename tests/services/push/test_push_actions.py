"""PushActionsService over a real SQLite store and a fake room state (Client-Server API,
"Push Notifications": "Receiving notifications", "Marking notifications as read"): one
room row per notifying event, an exception row only for members whose outcome differs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from peyvand.events.pdu import Pdu, StateKey
from peyvand.events.push_rules.rule import PushRule
from peyvand.events.push_rules.ruleset import Ruleset, build_ruleset
from peyvand.events.room_versions import KNOWN_ROOM_VERSIONS
from peyvand.services.push.actions import PushActionsService
from peyvand.services.push.rules_api import PushRulesService
from peyvand.services.timeline.room_state import RoomSnapshot
from peyvand.storage.migrations import run_migrations
from peyvand.storage.models import EventToPersist, StateGroupRow
from peyvand.storage.push_actions import PushActionStore
from peyvand.storage.push_rules import DefaultRuleRow, PushRuleRow, PushRuleStore
from peyvand.storage.relations import RelationStore
from peyvand.storage.sqlite import SqliteDatabase
from peyvand.types import EventID, JsonDict, RoomID, ServerName, UserID

ROOM = RoomID("!room:localhost")
ALICE = UserID("@alice:localhost")
BOB = UserID("@bob:localhost")
CAROL = UserID("@carol:localhost")
REMOTE = UserID("@dave:elsewhere")
VERSION = KNOWN_ROOM_VERSIONS["11"]


def pdu(event_id: str, event_type: str, sender: str, content: JsonDict, **extra: Any) -> Pdu:
    data = {"type": event_type, "room_id": ROOM, "sender": sender, "content": content, **extra}
    return Pdu(data, EventID(event_id), VERSION)


@dataclass
class FakeState:
    """One room whose state can change; events by state key."""

    snapshot: RoomSnapshot
    events: dict[EventID, Pdu] = field(default_factory=dict)

    @classmethod
    def build(cls, members: Iterable[UserID], power: Mapping[str, int]) -> FakeState:
        snapshot = RoomSnapshot(
            room_id=ROOM,
            room_version=VERSION,
            state={},
            memberships={},
            extremities=[],
            depth=1,
            state_group=StateGroupRow(1, ROOM, 1, None, None),
        )
        state = cls(snapshot)
        state.set_state(pdu("$create", "m.room.create", ALICE, {}, state_key=""))
        state.set_state(
            pdu("$power", "m.room.power_levels", ALICE, {"users": dict(power)}, state_key="")
        )
        for user_id in members:
            state.join(user_id)
        return state

    def set_state(self, event: Pdu) -> None:
        assert event.state_key is not None
        self.snapshot.state[(event.type, event.state_key)] = event.event_id
        self.events[event.event_id] = event
        if event.type == "m.room.member":
            self.snapshot.set_membership(UserID(event.state_key), str(event.content["membership"]))
        group = self.snapshot.state_group.state_group + 1
        self.snapshot.state_group = StateGroupRow(group, ROOM, group, None, None)

    def join(self, user_id: UserID, displayname: str | None = None) -> None:
        content: JsonDict = {"membership": "join"}
        if displayname is not None:
            content["displayname"] = displayname
        event_id = f"$join-{user_id}-{len(self.events)}"
        self.set_state(pdu(event_id, "m.room.member", user_id, content, state_key=user_id))

    async def get_room(self, room_id: RoomID) -> RoomSnapshot | None:
        return self.snapshot if room_id == ROOM else None

    async def get_state_events(
        self, state: Mapping[StateKey, EventID], keys: Iterable[StateKey]
    ) -> dict[StateKey, Pdu]:
        return {k: self.events[state[k]] for k in keys if k in state}


@dataclass
class FakeRulesets:
    user_rules: dict[str, list[PushRule]] = field(default_factory=dict)
    asked: list[list[str]] = field(default_factory=list)
    version: int = 0

    async def get_rulesets(self, user_ids: Iterable[str]) -> dict[str, Ruleset]:
        users = list(user_ids)
        self.asked.append(users)
        return {u: build_ruleset(u, self.user_rules.get(u, [])) for u in users}


@dataclass
class FakeReceipts:
    positions: dict[tuple[UserID, RoomID], int] = field(default_factory=dict)

    async def read_positions(
        self, user_id: UserID, room_ids: Sequence[RoomID]
    ) -> dict[RoomID, int]:
        return {r: self.positions[(user_id, r)] for r in room_ids if (user_id, r) in self.positions}


@dataclass
class FakeIgnored:
    ignored: dict[UserID, frozenset[UserID]] = field(default_factory=dict)

    async def of(self, user_id: UserID) -> frozenset[UserID]:
        return self.ignored.get(user_id, frozenset())


@dataclass
class World:
    db: SqliteDatabase
    state: FakeState
    rulesets: FakeRulesets
    receipts: FakeReceipts
    ignored: FakeIgnored
    store: PushActionStore
    service: PushActionsService
    next_ordering: int = 100

    async def persist(
        self, event: Pdu, *, thread_root: str | None = None, ordering: int | None = None
    ) -> int:
        if ordering is None:
            self.next_ordering += 1
            ordering = self.next_ordering
        write = await self.service.prepare(
            [
                EventToPersist(
                    pdu=event,
                    stream_ordering=ordering,
                    state_group=self.state.snapshot.state_group.state_group,
                    new_state_group=None,
                    txn=None,
                    relates_to=None if thread_root is None else EventID(thread_root),
                    rel_type=None if thread_root is None else "m.thread",
                    new_extremities=(),
                )
            ]
        )
        if write is not None:
            async with self.db.transaction() as txn:
                await write(txn)
        return ordering

    async def message(self, sender: UserID, body: str, **content: Any) -> int:
        content = {"msgtype": "m.text", "body": body, **content}
        return await self.persist(
            pdu(f"$m{self.next_ordering + 1}", "m.room.message", sender, content)
        )

    async def room_rows(self) -> list[tuple[int, int, str]]:
        rows = await self.db.fetch(
            "SELECT stream_ordering, highlight, thread_id FROM push_room_notifications"
            " ORDER BY stream_ordering"
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def exceptions(self) -> list[tuple[str, int, int, int]]:
        rows = await self.db.fetch(
            "SELECT user_id, stream_ordering, notify, highlight FROM push_user_exceptions"
            " ORDER BY stream_ordering, user_id"
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def counts(self, user_id: UserID) -> tuple[int, int]:
        counts = await self.service.unread_counts(user_id, [ROOM])
        found = counts.get(ROOM, {"notification_count": 0, "highlight_count": 0})
        return found["notification_count"], found["highlight_count"]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    db = await SqliteDatabase.open(str(tmp_path / "push_actions.db"))
    await run_migrations(db)
    state = FakeState.build([ALICE, BOB, CAROL, REMOTE], {ALICE: 100})
    rulesets, receipts, ignored = FakeRulesets(), FakeReceipts(), FakeIgnored()
    store = PushActionStore(db)
    service = PushActionsService(
        ServerName("localhost"),
        store,
        cast(Any, state),
        rulesets,
        receipts,
        ignored.of,
        relations=RelationStore(db).relations_of,
    )
    try:
        yield World(db, state, rulesets, receipts, ignored, store, service)
    finally:
        await db.close()


async def test_a_message_writes_one_room_row_and_no_member_row(world: World) -> None:
    at = await world.message(ALICE, "hello")
    assert world.rulesets.asked == [[ALICE, BOB, CAROL]]
    assert await world.room_rows() == [(at, 0, "main")]
    assert await world.exceptions() == []
    assert await world.counts(BOB) == (1, 0)
    assert await world.counts(CAROL) == (1, 0)
    # The sender's own event reads up to it.
    assert await world.counts(ALICE) == (0, 0)


async def test_mentions_highlight_and_threads_are_recorded(world: World) -> None:
    at = await world.message(CAROL, "bob?", **{"m.mentions": {"user_ids": [BOB]}})
    in_thread = await world.persist(
        pdu("$reply", "m.room.message", CAROL, {"msgtype": "m.text", "body": "in a thread"}),
        thread_root="$root",
    )
    assert await world.room_rows() == [(at, 0, "main"), (in_thread, 0, "$root")]
    assert await world.exceptions() == [(BOB, at, 0, 1)]
    assert await world.counts(BOB) == (2, 1)
    assert await world.counts(ALICE) == (2, 0)


async def test_room_mentions_highlight_only_from_senders_with_the_power(world: World) -> None:
    room_mention = {"m.mentions": {"room": True}}
    by_alice = await world.message(ALICE, "everyone!", **room_mention)
    by_carol = await world.message(CAROL, "everyone!", **room_mention)
    assert await world.room_rows() == [(by_alice, 1, "main"), (by_carol, 0, "main")]
    assert await world.counts(BOB) == (2, 1)


async def test_display_names_follow_state_changes(world: World) -> None:
    condition: JsonDict = {"kind": "contains_display_name"}
    world.rulesets.user_rules[BOB] = [
        PushRule(
            "override", "name", ("notify", {"set_tweak": "highlight"}), (condition,), None, True
        )
    ]
    world.state.join(BOB, "Bobby")
    named = await world.message(ALICE, "hi Bobby")
    world.state.join(BOB, "Robert")
    await world.message(ALICE, "hi Bobby")
    assert await world.exceptions() == [(BOB, named, 0, 1)]


async def test_a_muted_member_and_the_master_rule_are_exceptions(world: World) -> None:
    world.rulesets.user_rules[BOB] = [PushRule("room", ROOM, (), (), None, True)]
    world.rulesets.user_rules[CAROL] = [PushRule("override", ".m.rule.master", (), (), None, True)]
    at = await world.message(ALICE, "hello", **{"m.mentions": {"user_ids": [CAROL]}})
    # An override rule (a mention) still ranks above a room rule.
    mention = await world.message(ALICE, "bob!", **{"m.mentions": {"user_ids": [BOB]}})
    assert await world.exceptions() == [
        (BOB, at, -1, 0),
        (CAROL, at, -1, 0),
        (BOB, mention, 0, 1),
        (CAROL, mention, -1, 0),
    ]
    assert await world.counts(BOB) == (1, 1)
    assert await world.counts(CAROL) == (0, 0)


async def test_own_events_and_leaving_read_everything_before_them(world: World) -> None:
    await world.message(ALICE, "one")
    await world.message(ALICE, "two", **{"m.mentions": {"user_ids": [BOB, CAROL]}})
    await world.message(BOB, "answer")
    assert await world.counts(BOB) == (0, 0)
    assert await world.counts(CAROL) == (3, 1)
    assert await world.counts(ALICE) == (1, 0)
    kick = pdu("$kick", "m.room.member", BOB, {"membership": "leave"}, state_key=CAROL)
    world.state.set_state(kick)
    await world.persist(kick)
    assert await world.counts(CAROL) == (0, 0)
    # Read marks keep the exceptions they cover (GET /notifications lists them).
    assert [(user, highlight) for user, _, _, highlight in await world.exceptions()] == [
        (BOB, 1),
        (CAROL, 1),
    ]


async def test_events_from_ignored_users_do_not_count(world: World) -> None:
    await world.message(CAROL, "one", **{"m.mentions": {"user_ids": [BOB]}})
    await world.message(ALICE, "two")
    await world.message(CAROL, "three")
    world.ignored.ignored[BOB] = frozenset({CAROL})
    assert await world.counts(BOB) == (1, 0)
    world.ignored.ignored[BOB] = frozenset()
    assert await world.counts(BOB) == (3, 1)


async def test_backfilled_history_never_notifies(world: World) -> None:
    await world.persist(
        pdu("$old", "m.room.message", CAROL, {"msgtype": "m.text", "body": "old"}),
        ordering=-5,
    )
    assert await world.room_rows() == []
    assert await world.counts(BOB) == (0, 0)


async def test_a_failing_evaluation_is_logged_not_raised(
    world: World, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: object) -> dict[str, Ruleset]:
        raise RuntimeError("rules unreadable")

    monkeypatch.setattr(world.rulesets, "get_rulesets", broken)
    with caplog.at_level(logging.ERROR):
        await world.message(ALICE, "lost")
    assert "evaluating push actions for 1 events failed" in caplog.text
    assert await world.room_rows() == []


async def test_counts_follow_receipts_and_read_rows_stay(world: World) -> None:
    first = await world.message(ALICE, "one", **{"m.mentions": {"user_ids": [BOB]}})
    second = await world.message(ALICE, "two", **{"m.mentions": {"user_ids": [BOB]}})
    third = await world.message(ALICE, "three", **{"m.mentions": {"user_ids": [BOB]}})
    assert await world.counts(BOB) == (3, 3)

    world.receipts.positions[(BOB, ROOM)] = second
    assert await world.counts(BOB) == (1, 1)
    # What the receipt read stays, for GET /notifications; counts start after it.
    assert [position for _, position, _, _ in await world.exceptions()] == [first, second, third]
    assert await world.service.unread_counts(CAROL, [ROOM, RoomID("!none:localhost")]) == {
        ROOM: {"notification_count": 3, "highlight_count": 0}
    }


class CountingRuleStore(PushRuleStore):
    """The real store, counting bulk reads of users' rules (two queries each)."""

    def __init__(self, db: SqliteDatabase) -> None:
        super().__init__(db)
        self.reads: list[list[str]] = []

    async def get_rules_of(
        self, user_ids: Sequence[str]
    ) -> dict[str, tuple[list[PushRuleRow], list[DefaultRuleRow]]]:
        self.reads.append(sorted(user_ids))
        return await super().get_rules_of(user_ids)


async def test_a_big_room_reads_members_rules_in_bulk_once_then_never(world: World) -> None:
    members = [UserID(f"@member{i}:localhost") for i in range(300)]
    for user_id in members:
        world.state.join(user_id)
    store = CountingRuleStore(world.db)
    rules = PushRulesService(store)
    service = PushActionsService(
        ServerName("localhost"),
        world.store,
        cast(Any, world.state),
        rules,
        world.receipts,
        world.ignored.of,
        relations=RelationStore(world.db).relations_of,
    )
    world.service = service
    first = await world.message(ALICE, "hello", **{"m.mentions": {"user_ids": [members[5]]}})
    assert store.reads == [sorted([ALICE, BOB, CAROL, *members])]
    store.reads.clear()
    await world.message(ALICE, "again")
    assert store.reads == []
    await rules.put_rule(members[9], "override", "mute", {"actions": []})
    third = await world.message(ALICE, "and again")
    assert store.reads == [[members[9]]]
    assert await world.exceptions() == [(members[5], first, 0, 1), (members[9], third, -1, 0)]
    assert await world.counts(members[5]) == (3, 1)
    assert await world.counts(members[9]) == (2, 0)
    assert await world.counts(members[10]) == (3, 0)
