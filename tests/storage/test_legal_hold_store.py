"""Legal holds on both backends: LegalHoldStore (the contract: holds are created, released
once and never deleted) and LegalHolds over it (validation, the audit entries, and which
events ``held`` names). docs/compliance.md."""

from __future__ import annotations

from typing import Any

import pytest

from peyvand.compliance.audit import AuditAction, AuditLog
from peyvand.compliance.legal_hold import HeldQuery, LegalHolds, covered
from peyvand.errors import Errcode, MatrixError
from peyvand.storage.audit import AuditStore
from peyvand.storage.database import Database, Row
from peyvand.storage.errors import StorageError
from peyvand.storage.legal_holds import Hold, LegalHoldStore

ADMIN = "@admin:example.org"
ROOM = "!room:example.org"
OTHER_ROOM = "!other:example.org"
V12_ROOM = "!" + "A" * 42 + "Q"
ALICE = "@alice:example.org"
BOB = "@bob:remote.example"
T0 = 1_700_000_000.0


class Clock:
    """Seconds, one more on every reading."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        self.now += 1
        return self.now


class CountingDatabase:
    """A database that counts the statements read through it."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.fetches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        self.fetches += 1
        return await self._db.fetch(sql, *args)


def hold(hold_id: str, kind: str, target: str, created_ts: int, **extra: Any) -> Hold:
    fields: dict[str, Any] = {
        "case_id": "CASE-1",
        "reason": "litigation",
        "since_ts": None,
        "until_ts": None,
        "created_by": ADMIN,
        **extra,
    }
    return Hold(hold_id, kind, target, created_ts=created_ts, **fields)  # type: ignore[arg-type]


def holds_for(db: Database) -> tuple[LegalHolds, AuditLog]:
    audit = AuditLog(AuditStore(db), Clock())
    return LegalHolds(LegalHoldStore(db), audit, Clock()), audit


def query(event_id: str, room_id: str, sender: str, ts: int) -> HeldQuery:
    return HeldQuery(event_id, room_id, sender, ts)


# -- the store ---------------------------------------------------------------------------


async def test_holds_are_created_listed_and_read(database: Database) -> None:
    store = LegalHoldStore(database)
    first = hold("h1", "room", ROOM, 2000, since_ts=100, until_ts=200)
    second = hold("h2", "user", ALICE, 1000, case_id="CASE-2", reason="subpoena")
    await store.create(first)
    await store.create(second)

    assert await store.get("h1") == first
    assert await store.get("h2") == second
    assert await store.get("nope") is None
    assert first.active and second.active
    # Oldest first.
    assert await store.list(active_only=True) == [second, first]
    assert await store.list(active_only=False) == [second, first]


async def test_release_sets_the_released_columns_once(database: Database) -> None:
    store = LegalHoldStore(database)
    placed = hold("h1", "room", ROOM, 1000)
    await store.create(placed)
    await store.create(hold("h2", "room", OTHER_ROOM, 2000))

    released = await store.release("h1", "@officer:example.org", 5000, "case closed")
    assert released == Hold(
        "h1",
        "room",
        ROOM,
        "CASE-1",
        "litigation",
        None,
        None,
        ADMIN,
        1000,
        released_by="@officer:example.org",
        released_ts=5000,
        release_reason="case closed",
    )
    assert released is not None and not released.active
    assert await store.get("h1") == released
    assert await store.release("h1", ADMIN, 6000, "again") is None
    assert await store.release("nope", ADMIN, 6000, "unknown") is None
    assert await store.get("h1") == released  # the second release changed nothing

    assert [h.hold_id for h in await store.list(active_only=True)] == ["h2"]
    assert await store.list(active_only=False) == [released, await store.get("h2")]


async def test_the_schema_keeps_every_hold(database: Database) -> None:
    store = LegalHoldStore(database)
    await store.create(hold("h1", "room", ROOM, 1000))
    await store.create(hold("h2", "user", ALICE, 2000))
    await store.release("h2", ADMIN, 3000, "done")

    with pytest.raises(StorageError, match="never deleted"):
        await database.execute("DELETE FROM legal_holds WHERE hold_id = 'h1'")
    with pytest.raises(StorageError, match="only ever released"):
        await database.execute("UPDATE legal_holds SET target = $1 WHERE hold_id = 'h1'", ALICE)
    with pytest.raises(StorageError, match="only ever released"):
        await database.execute("UPDATE legal_holds SET until_ts = 5 WHERE hold_id = 'h1'")
    with pytest.raises(StorageError, match="only ever released"):
        await database.execute("UPDATE legal_holds SET released_ts = 9 WHERE hold_id = 'h2'")
    if database.dialect == "postgres":
        with pytest.raises(StorageError, match="never deleted"):
            await database.execute("TRUNCATE legal_holds")
    # Half a release, an unknown kind or a backwards range do not fit the table.
    with pytest.raises(StorageError):
        await database.execute("UPDATE legal_holds SET released_ts = 9 WHERE hold_id = 'h1'")
    with pytest.raises(StorageError):
        await store.create(hold("h3", "server", "example.org", 1))
    with pytest.raises(StorageError):
        await store.create(hold("h4", "room", ROOM, 1, since_ts=10, until_ts=9))
    with pytest.raises(StorageError):
        await store.create(hold("h1", "room", OTHER_ROOM, 1))  # the ID is taken

    assert [h.hold_id for h in await store.list(active_only=False)] == ["h1", "h2"]
    assert (await store.get("h1")) == hold("h1", "room", ROOM, 1000)


async def test_active_for_finds_room_and_user_holds_in_one_statement(database: Database) -> None:
    counting = CountingDatabase(database)
    store = LegalHoldStore(counting)
    await store.create(hold("room", "room", ROOM, 1))
    await store.create(hold("alice", "user", ALICE, 2))
    await store.create(hold("bob", "user", BOB, 3))
    await store.create(hold("released", "room", OTHER_ROOM, 4))
    await store.release("released", ADMIN, 5, "done")

    async def found(rooms: list[str], senders: list[str]) -> set[str]:
        before = counting.fetches
        holds = await store.active_for(rooms, senders)
        assert counting.fetches - before <= 1
        return {h.hold_id for h in holds}

    assert await found([ROOM, OTHER_ROOM], [ALICE, "@carol:example.org"]) == {"room", "alice"}
    assert await found([], [BOB]) == {"bob"}
    assert await found([ROOM], []) == {"room"}
    assert await found([OTHER_ROOM], []) == set()  # released
    # A target only counts for its kind.
    assert await found([ALICE], [ROOM]) == set()
    assert await found([], []) == set()
    # A batch too large for an IN-list reads every active hold: still one statement.
    many_rooms = [f"!r{i}:example.org" for i in range(400)] + [ROOM]
    many_senders = [f"@u{i}:example.org" for i in range(400)] + [BOB]
    assert await found(many_rooms, many_senders) == {"room", "bob"}
    assert await found(many_rooms, [f"@u{i}:example.org" for i in range(400)]) == {"room"}


# -- LegalHolds --------------------------------------------------------------------------


async def test_place_and_release_are_recorded_in_the_audit_log(database: Database) -> None:
    holds, audit = holds_for(database)
    placed = await holds.place(
        ADMIN, "room", ROOM, "CASE-17", "litigation", since_ts=1000, until_ts=2000
    )
    assert (placed.kind, placed.target, placed.case_id, placed.reason) == (
        "room",
        ROOM,
        "CASE-17",
        "litigation",
    )
    assert (placed.since_ts, placed.until_ts, placed.created_by) == (1000, 2000, ADMIN)
    assert placed.created_ts == 1_700_000_001_000
    assert placed.active and len(placed.hold_id) >= 16
    other = await holds.place(ADMIN, "user", ALICE, "CASE-18", "subpoena")
    assert other.hold_id != placed.hold_id
    assert await holds.get(placed.hold_id) == placed
    assert await holds.list() == [placed, other]

    released = await holds.release("@officer:example.org", placed.hold_id, "case closed")
    assert (released.released_by, released.released_ts, released.release_reason) == (
        "@officer:example.org",
        1_700_000_003_000,
        "case closed",
    )
    assert await holds.list() == [other]
    assert await holds.list(active_only=False) == [released, other]

    entries = await audit.entries(0, 10)
    assert [(e["actor"], e["action"], e["target"], e["reason"]) for e in entries] == [
        (ADMIN, AuditAction.HOLD, ROOM, "litigation"),
        (ADMIN, AuditAction.HOLD, ALICE, "subpoena"),
        ("@officer:example.org", AuditAction.RELEASE, ROOM, "case closed"),
    ]
    assert entries[0]["details"] == {
        "hold_id": placed.hold_id,
        "kind": "room",
        "case_id": "CASE-17",
        "since_ts": 1000,
        "until_ts": 2000,
    }
    assert entries[1]["details"]["since_ts"] is None
    assert entries[2]["details"] == {
        "hold_id": placed.hold_id,
        "kind": "room",
        "case_id": "CASE-17",
    }
    result = await audit.verify()
    assert (result.ok, result.entries) == (True, 3)


async def test_release_of_an_unknown_or_released_hold_is_not_found(database: Database) -> None:
    holds, audit = holds_for(database)
    placed = await holds.place(ADMIN, "room", ROOM, "CASE-1", "litigation")
    await holds.release(ADMIN, placed.hold_id, "done")

    with pytest.raises(MatrixError) as unknown:
        await holds.release(ADMIN, "nope", "done")
    assert (unknown.value.errcode, unknown.value.status) == (Errcode.NOT_FOUND, 404)
    with pytest.raises(MatrixError, match="already released") as again:
        await holds.release(ADMIN, placed.hold_id, "done again")
    assert again.value.errcode == Errcode.NOT_FOUND
    with pytest.raises(MatrixError) as missing:
        await holds.get("nope")
    assert missing.value.errcode == Errcode.NOT_FOUND
    with pytest.raises(MatrixError) as no_reason:
        await holds.release(ADMIN, placed.hold_id, "  ")
    assert no_reason.value.errcode == Errcode.INVALID_PARAM

    # Only the successful actions were recorded.
    assert [e["action"] for e in await audit.entries(0, 10)] == ["hold", "release"]
    assert (await audit.verify()).ok


@pytest.mark.parametrize(
    ("kind", "target", "case_id", "reason", "since_ts", "until_ts", "problem"),
    [
        ("server", "example.org", "C", "R", None, None, "kind"),
        ("user", ROOM, "C", "R", None, None, "Not a user ID"),
        ("user", "alice", "C", "R", None, None, "Not a user ID"),
        ("user", "@alice", "C", "R", None, None, "Not a user ID"),
        ("room", ALICE, "C", "R", None, None, "Not a room ID"),
        ("room", "!", "C", "R", None, None, "Not a room ID"),
        ("room", "!short", "C", "R", None, None, "Not a room ID"),
        ("room", "!:example.org", "C", "R", None, None, "Not a room ID"),
        ("room", ROOM, "", "R", None, None, "case_id"),
        ("room", ROOM, "C", " ", None, None, "reason"),
        ("room", ROOM, "C", "R", 2000, 1000, "after"),
        ("room", ROOM, "C", "R", -1, None, "since_ts"),
        ("room", ROOM, "C", "R", None, 2**53, "until_ts"),
    ],
)
async def test_place_refuses_malformed_holds(
    database: Database,
    kind: str,
    target: str,
    case_id: str,
    reason: str,
    since_ts: int | None,
    until_ts: int | None,
    problem: str,
) -> None:
    holds, audit = holds_for(database)
    with pytest.raises(MatrixError, match=problem) as refused:
        await holds.place(ADMIN, kind, target, case_id, reason, since_ts, until_ts)
    assert (refused.value.errcode, refused.value.status) == (Errcode.INVALID_PARAM, 400)
    assert await holds.list(active_only=False) == []
    assert await audit.entries(0, 10) == []


async def test_place_accepts_every_room_id_form(database: Database) -> None:
    holds, _ = holds_for(database)
    for room_id in (ROOM, V12_ROOM, "!abc:[::1]:8448"):
        assert (await holds.place(ADMIN, "room", room_id, "C", "R")).target == room_id
    for user_id in (ALICE, "@bob:remote.example:8448"):
        assert (await holds.place(ADMIN, "user", user_id, "C", "R")).target == user_id
    # A single instant is a range.
    assert (await holds.place(ADMIN, "room", ROOM, "C", "R", 5, 5)).until_ts == 5


async def test_held_names_the_events_a_hold_covers(database: Database) -> None:
    holds, _ = holds_for(database)
    await holds.place(ADMIN, "room", ROOM, "C1", "whole room")
    await holds.place(ADMIN, "user", ALICE, "C2", "alice in a range", since_ts=1000, until_ts=2000)
    await holds.place(ADMIN, "room", V12_ROOM, "C3", "from a date on", since_ts=5000)
    await holds.place(ADMIN, "user", BOB, "C4", "up to a date", until_ts=300)
    gone = await holds.place(ADMIN, "room", OTHER_ROOM, "C5", "released")
    await holds.release(ADMIN, gone.hold_id, "done")

    events = [
        query("$in-room", ROOM, "@carol:example.org", 1),
        query("$alice-early", OTHER_ROOM, ALICE, 999),
        query("$alice-start", OTHER_ROOM, ALICE, 1000),
        query("$alice-mid", "!x:example.org", ALICE, 1500),
        query("$alice-end", OTHER_ROOM, ALICE, 2000),
        query("$alice-late", OTHER_ROOM, ALICE, 2001),
        query("$alice-in-room", ROOM, ALICE, 9999),
        query("$v12-before", V12_ROOM, "@carol:example.org", 4999),
        query("$v12-from", V12_ROOM, "@carol:example.org", 5000),
        query("$bob-old", "!y:example.org", BOB, 300),
        query("$bob-new", "!y:example.org", BOB, 301),
        query("$released-room", OTHER_ROOM, "@carol:example.org", 1500),
        query("$nobody", "!z:example.org", "@dave:example.org", 1500),
    ]
    assert await holds.held(events) == {
        "$in-room",
        "$alice-start",
        "$alice-mid",
        "$alice-end",
        "$alice-in-room",
        "$v12-from",
        "$bob-old",
    }
    assert await holds.held([]) == set()
    assert await holds.held(events[-2:]) == set()


async def test_held_reads_once_per_batch_and_matches_in_python(database: Database) -> None:
    counting = CountingDatabase(database)
    holds = LegalHolds(LegalHoldStore(counting), AuditLog(AuditStore(database)), Clock())
    await holds.place(ADMIN, "room", ROOM, "C", "R", until_ts=10)
    batch = [query(f"$e{i}", ROOM if i % 2 else OTHER_ROOM, ALICE, i) for i in range(50)]
    before = counting.fetches
    assert await holds.held(batch) == {f"$e{i}" for i in range(1, 11, 2)}
    assert counting.fetches - before == 1
    assert await holds.held([]) == set()
    assert counting.fetches - before == 1  # an empty batch asks nothing


def test_covered_is_pure_matching() -> None:
    room = hold("r", "room", ROOM, 1, since_ts=10, until_ts=20)
    user = hold("u", "user", ALICE, 1)
    events = [
        query("$a", ROOM, BOB, 10),
        query("$b", ROOM, BOB, 21),
        query("$c", OTHER_ROOM, ALICE, 0),
        # A room ID given as a sender (or the reverse) matches nothing.
        query("$d", ALICE, ROOM, 15),
    ]
    assert covered([room, user], events) == {"$a", "$c"}
    assert covered([], events) == set()


async def test_user_held(database: Database) -> None:
    holds, _ = holds_for(database)
    ranged = await holds.place(ADMIN, "user", ALICE, "C", "R", since_ts=1, until_ts=2)
    await holds.place(ADMIN, "room", ROOM, "C", "R")
    assert await holds.user_held(ALICE)
    assert not await holds.user_held(BOB)
    assert not await holds.user_held(ROOM)  # a room hold holds no user
    await holds.release(ADMIN, ranged.hold_id, "done")
    assert not await holds.user_held(ALICE)
