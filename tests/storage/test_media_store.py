"""MediaStore contract: the same behaviour on SQLite and PostgreSQL (Client-Server API,
"Content repository").

Every test names its own origins, media IDs, users and hashes (from ``ids``), so the tests
would not see each other's rows even in a shared database."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import pytest

from peyvand.storage.database import Connection, Database, Row
from peyvand.storage.media import MediaKey, MediaRow, MediaStore, ThumbnailRow
from peyvand.types import ServerName, UserID

CHUNK = 200
"""``MediaStore``'s IN-list chunk size: batches larger than this take several statements."""


@dataclass(frozen=True)
class Ids:
    """Names unique to one test."""

    tag: str

    @property
    def local(self) -> ServerName:
        return ServerName(f"local-{self.tag}.test")

    @property
    def remote(self) -> ServerName:
        return ServerName(f"remote-{self.tag}.test")

    @property
    def other_remote(self) -> ServerName:
        return ServerName(f"other-{self.tag}.test")

    def user(self, name: str) -> UserID:
        return UserID(f"@{name}-{self.tag}:{self.local}")

    def sha(self, name: str) -> str:
        return hashlib.sha256(f"{self.tag}/{name}".encode()).hexdigest()


@pytest.fixture
def ids() -> Ids:
    return Ids(uuid.uuid4().hex[:12])


@pytest.fixture
def store(database: Database) -> MediaStore:
    return MediaStore(database)


def uploaded(
    origin: ServerName,
    media_id: str,
    sha256: str,
    *,
    user_id: UserID | None = None,
    size: int = 10,
    ts: int = 1_000,
    last_access_ts: int | None = None,
    quarantined_by: str | None = None,
) -> MediaRow:
    return MediaRow(
        origin=origin,
        media_id=media_id,
        user_id=user_id,
        content_type="image/png",
        upload_name=f"{media_id}.png",
        size=size,
        sha256=sha256,
        created_ts=ts,
        uploaded_ts=ts,
        expires_ts=None,
        last_access_ts=ts if last_access_ts is None else last_access_ts,
        quarantined_by=quarantined_by,
    )


def thumb(sha256: str, width: int = 32, height: int = 32, method: str = "scale") -> ThumbnailRow:
    return ThumbnailRow(width, height, method, "image/jpeg", width * height, sha256)


async def last_access(store: MediaStore, origin: ServerName, media_id: str) -> int:
    row = await store.get(origin, media_id)
    assert row is not None
    return row.last_access_ts


# get / add_uploaded


async def test_get_missing_is_none(store: MediaStore, ids: Ids) -> None:
    assert await store.get(ids.local, "nothing") is None
    await store.add_uploaded(uploaded(ids.local, "a", ids.sha("a")))
    assert await store.get(ids.local, "b") is None
    assert await store.get(ids.remote, "a") is None


async def test_add_uploaded_round_trips_every_field(store: MediaStore, ids: Ids) -> None:
    full = MediaRow(
        origin=ids.local,
        media_id="full",
        user_id=ids.user("alice"),
        content_type="text/plain; charset=utf-8",
        upload_name="résumé ☃.txt",
        size=5_000_000_000,  # beyond 32 bits: the column is BIGINT
        sha256=ids.sha("full"),
        created_ts=1_700_000_000_000,
        uploaded_ts=1_700_000_000_500,
        expires_ts=1_700_000_100_000,
        last_access_ts=1_700_000_001_000,
        quarantined_by="@admin:localhost",
    )
    await store.add_uploaded(full)
    got = await store.get(ids.local, "full")
    assert got == full
    assert got is not None and not got.pending
    assert isinstance(got.size, int) and isinstance(got.created_ts, int)

    # A cached remote item: no uploader, no name, nothing optional.
    remote = replace(
        full,
        origin=ids.remote,
        media_id="bare",
        user_id=None,
        content_type=None,
        upload_name=None,
        uploaded_ts=None,
        expires_ts=None,
        quarantined_by=None,
    )
    await store.add_uploaded(remote)
    assert await store.get(ids.remote, "bare") == remote
    # Same media ID under another origin is another item.
    assert await store.get(ids.local, "full") == full


# add_pending / count_pending / complete_pending / expire_pending


async def test_add_pending_and_count_pending(store: MediaStore, ids: Ids) -> None:
    alice, bob = ids.user("alice"), ids.user("bob")
    assert await store.count_pending(alice, now=100) == 0
    await store.add_pending(ids.local, "p1", alice, now=100, expires_ts=200)
    await store.add_pending(ids.local, "p2", alice, now=100, expires_ts=300)
    await store.add_pending(ids.local, "p3", bob, now=100, expires_ts=300)

    row = await store.get(ids.local, "p1")
    assert row == MediaRow(
        origin=ids.local,
        media_id="p1",
        user_id=alice,
        content_type=None,
        upload_name=None,
        size=None,
        sha256=None,
        created_ts=100,
        uploaded_ts=None,
        expires_ts=200,
        last_access_ts=100,
        quarantined_by=None,
    )
    assert row.pending

    assert await store.count_pending(alice, now=150) == 2
    assert await store.count_pending(bob, now=150) == 1
    # Expired ones are not counted (expires_ts is the first instant it is expired).
    assert await store.count_pending(alice, now=199) == 2
    assert await store.count_pending(alice, now=200) == 1
    assert await store.count_pending(alice, now=300) == 0
    # Uploaded ones are not counted.
    assert await store.complete_pending(
        ids.local,
        "p2",
        content_type="image/png",
        upload_name=None,
        size=3,
        sha256=ids.sha("p2"),
        now=160,
        quarantined_by=None,
    )
    assert await store.count_pending(alice, now=150) == 1
    # Completed uploads are not pending whatever the time.
    await store.add_uploaded(uploaded(ids.local, "u", ids.sha("u"), user_id=alice))
    assert await store.count_pending(alice, now=0) == 1


async def test_complete_pending(store: MediaStore, ids: Ids) -> None:
    alice = ids.user("alice")
    await store.add_pending(ids.local, "p", alice, now=100, expires_ts=1_000)
    assert await store.complete_pending(
        ids.local,
        "p",
        content_type="image/gif",
        upload_name="cat.gif",
        size=1234,
        sha256=ids.sha("cat"),
        now=500,
        quarantined_by=None,
    )
    assert await store.get(ids.local, "p") == MediaRow(
        origin=ids.local,
        media_id="p",
        user_id=alice,
        content_type="image/gif",
        upload_name="cat.gif",
        size=1234,
        sha256=ids.sha("cat"),
        created_ts=100,
        uploaded_ts=500,
        expires_ts=None,
        last_access_ts=500,
        quarantined_by=None,
    )

    # A second upload to the same ID is refused and changes nothing.
    assert not await store.complete_pending(
        ids.local,
        "p",
        content_type="image/png",
        upload_name="dog.png",
        size=1,
        sha256=ids.sha("dog"),
        now=600,
        quarantined_by="@admin:localhost",
    )
    row = await store.get(ids.local, "p")
    assert row is not None
    assert (row.sha256, row.size, row.uploaded_ts) == (ids.sha("cat"), 1234, 500)

    # Unknown IDs (including the same ID on another origin) are not pending.
    for origin, media_id in ((ids.local, "unknown"), (ids.remote, "p")):
        assert not await store.complete_pending(
            origin,
            media_id,
            content_type="image/png",
            upload_name=None,
            size=1,
            sha256=ids.sha("x"),
            now=600,
            quarantined_by=None,
        )
        assert await store.get(origin, media_id) is None

    # Bytes that were quarantined already are quarantined on arrival.
    await store.add_pending(ids.local, "q", alice, now=100, expires_ts=1_000)
    assert await store.complete_pending(
        ids.local,
        "q",
        content_type="image/png",
        upload_name=None,
        size=7,
        sha256=ids.sha("bad"),
        now=700,
        quarantined_by="@admin:localhost",
    )
    row = await store.get(ids.local, "q")
    assert row is not None
    assert (row.upload_name, row.quarantined_by, row.expires_ts) == (
        None,
        "@admin:localhost",
        None,
    )
    assert not row.pending


async def test_expire_pending(store: MediaStore, ids: Ids) -> None:
    alice = ids.user("alice")
    await store.add_pending(ids.local, "old", alice, now=0, expires_ts=100)
    await store.add_pending(ids.local, "older", alice, now=0, expires_ts=50)
    await store.add_pending(ids.local, "fresh", alice, now=0, expires_ts=101)
    await store.add_pending(ids.local, "done", alice, now=0, expires_ts=10)
    assert await store.complete_pending(
        ids.local,
        "done",
        content_type="image/png",
        upload_name=None,
        size=1,
        sha256=ids.sha("done"),
        now=5,
        quarantined_by=None,
    )
    # An uploaded row that happens to carry an old expires_ts is not pending either.
    await store.add_uploaded(replace(uploaded(ids.local, "kept", ids.sha("kept")), expires_ts=1))

    mine = {(ids.local, m) for m in ("old", "older", "fresh", "done", "kept")}

    def own(keys: list[MediaKey]) -> set[MediaKey]:
        return {key for key in keys if key in mine}

    async def present() -> set[str]:
        return {m for _, m in mine if await store.get(ids.local, m) is not None}

    assert own(await store.expire_pending(now=49, limit=100)) == set()
    assert await present() == {"old", "older", "fresh", "done", "kept"}
    # Expiring deletes the rows (expires_ts is the first instant a reservation is expired)
    # and returns their keys, so the caller can wake their download waiters.
    assert own(await store.expire_pending(now=100, limit=100)) == {
        (ids.local, "old"),
        (ids.local, "older"),
    }
    assert await present() == {"fresh", "done", "kept"}
    assert own(await store.expire_pending(now=100, limit=100)) == set()
    assert own(await store.expire_pending(now=10_000, limit=100)) == {(ids.local, "fresh")}
    # Completed uploads are never expired, whatever their expires_ts said.
    assert await present() == {"done", "kept"}


async def test_expire_pending_in_batches(store: MediaStore, ids: Ids) -> None:
    alice = ids.user("alice")
    for i in range(5):
        await store.add_pending(ids.local, f"p{i}", alice, now=0, expires_ts=1)
    expired: list[MediaKey] = []
    while batch := [k for k in await store.expire_pending(now=10, limit=2) if k[0] == ids.local]:
        assert len(batch) <= 2
        expired += batch
    assert sorted(expired) == [(ids.local, f"p{i}") for i in range(5)]


async def test_complete_pending_after_expiry_is_refused(store: MediaStore, ids: Ids) -> None:
    """An upload that finishes after its reservation expired must not fill it in: the
    janitor may be deleting the row at that moment (and would delete a completed upload)."""
    alice = ids.user("alice")
    await store.add_pending(ids.local, "p", alice, now=0, expires_ts=100)
    for now in (100, 101):
        assert not await store.complete_pending(
            ids.local,
            "p",
            content_type="image/png",
            upload_name=None,
            size=1,
            sha256=ids.sha("late"),
            now=now,
            quarantined_by=None,
        )
    row = await store.get(ids.local, "p")
    assert row is not None and row.pending
    assert await store.complete_pending(
        ids.local,
        "p",
        content_type="image/png",
        upload_name=None,
        size=1,
        sha256=ids.sha("in time"),
        now=99,
        quarantined_by=None,
    )
    expired = await store.expire_pending(now=10_000, limit=100)
    assert (ids.local, "p") not in expired
    assert await store.get(ids.local, "p") is not None


# usage_of


async def test_usage_of(store: MediaStore, ids: Ids) -> None:
    alice, bob, carol = ids.user("alice"), ids.user("bob"), ids.user("carol")
    assert await store.usage_of(alice) == 0
    same = ids.sha("same")
    await store.add_uploaded(uploaded(ids.local, "a1", same, user_id=alice, size=100))
    # Deduplicated bytes still count once per upload.
    await store.add_uploaded(uploaded(ids.local, "a2", same, user_id=alice, size=100))
    await store.add_uploaded(
        uploaded(ids.local, "a3", ids.sha("big"), user_id=alice, size=3_000_000_000)
    )
    await store.add_uploaded(uploaded(ids.local, "b1", ids.sha("b"), user_id=bob, size=7))
    await store.add_uploaded(uploaded(ids.remote, "r", ids.sha("r"), size=99))
    # A pending upload has no size yet.
    await store.add_pending(ids.local, "c1", carol, now=0, expires_ts=10)

    usage = await store.usage_of(alice)
    assert usage == 3_000_000_200
    assert isinstance(usage, int)
    assert await store.usage_of(bob) == 7
    assert await store.usage_of(carol) == 0
    assert await store.usage_of(ids.user("nobody")) == 0


# quarantined_hash / set_quarantined


async def test_quarantine(store: MediaStore, ids: Ids) -> None:
    """Quarantine is by content (Synapse's "quarantine media by hash"): every row with the
    item's bytes is quarantined, and released, together."""
    h = ids.sha("h")
    await store.add_uploaded(uploaded(ids.local, "a", h))
    await store.add_uploaded(uploaded(ids.remote, "b", h))
    await store.add_uploaded(uploaded(ids.local, "other", ids.sha("other")))
    assert await store.quarantined_hash(h) is None
    assert await store.quarantined_hash(ids.sha("unknown")) is None

    async def quarantined_by() -> tuple[str | None, str | None, str | None]:
        a, b = await store.get(ids.local, "a"), await store.get(ids.remote, "b")
        other = await store.get(ids.local, "other")
        assert a is not None and b is not None and other is not None
        return a.quarantined_by, b.quarantined_by, other.quarantined_by

    assert await store.set_quarantined(ids.remote, "b", "@admin:localhost")
    assert await store.quarantined_hash(h) == "@admin:localhost"
    assert await quarantined_by() == ("@admin:localhost", "@admin:localhost", None)

    # Setting it again (to the same or another admin) still reports the row as found.
    assert await store.set_quarantined(ids.remote, "b", "@other:localhost")
    assert await store.quarantined_hash(h) == "@other:localhost"
    assert await quarantined_by() == ("@other:localhost", "@other:localhost", None)

    # Releasing any of them releases all of them.
    assert await store.set_quarantined(ids.local, "a", None)
    assert await store.quarantined_hash(h) is None
    assert await quarantined_by() == (None, None, None)

    # Unknown items.
    assert not await store.set_quarantined(ids.local, "missing", "@admin:localhost")
    assert not await store.set_quarantined(ids.local, "b", "@admin:localhost")
    assert await store.get(ids.local, "b") is None
    assert await store.quarantined_hash(h) is None


async def test_quarantine_pending_item(store: MediaStore, ids: Ids) -> None:
    await store.add_pending(ids.local, "p", ids.user("alice"), now=0, expires_ts=10)
    await store.add_pending(ids.local, "q", ids.user("alice"), now=0, expires_ts=10)
    assert await store.set_quarantined(ids.local, "p", "@admin:localhost")
    row = await store.get(ids.local, "p")
    assert row is not None and row.pending and row.quarantined_by == "@admin:localhost"
    # No bytes, so nothing else shares them: another pending item is left alone.
    other = await store.get(ids.local, "q")
    assert other is not None and other.quarantined_by is None


# get_thumbnail / add_thumbnail


async def test_thumbnails(store: MediaStore, ids: Ids) -> None:
    await store.add_uploaded(uploaded(ids.local, "m", ids.sha("m")))
    t1 = thumb(ids.sha("t1"), 32, 32, "crop")
    assert await store.get_thumbnail(ids.local, "m", 32, 32, "crop") is None

    assert await store.add_thumbnail(ids.local, "m", t1)
    assert await store.get_thumbnail(ids.local, "m", 32, 32, "crop") == t1
    # Recorded already: not replaced.
    assert not await store.add_thumbnail(ids.local, "m", replace(t1, sha256=ids.sha("t1b")))
    assert await store.get_thumbnail(ids.local, "m", 32, 32, "crop") == t1

    # Each of width, height and method is part of the key.
    others = [
        thumb(ids.sha("t2"), 32, 32, "scale"),
        thumb(ids.sha("t3"), 64, 32, "crop"),
        thumb(ids.sha("t4"), 32, 64, "crop"),
    ]
    for t in others:
        assert await store.add_thumbnail(ids.local, "m", t)
    for t in [t1, *others]:
        assert await store.get_thumbnail(ids.local, "m", t.width, t.height, t.method) == t
    assert await store.get_thumbnail(ids.local, "m", 64, 64, "crop") is None
    assert await store.get_thumbnail(ids.remote, "m", 32, 32, "crop") is None

    # No media row (never existed, or another origin): not recorded.
    assert not await store.add_thumbnail(ids.local, "missing", t1)
    assert await store.get_thumbnail(ids.local, "missing", 32, 32, "crop") is None
    assert not await store.add_thumbnail(ids.remote, "m", t1)
    assert await store.get_thumbnail(ids.remote, "m", 32, 32, "crop") is None

    # Deleted meanwhile: not recorded either.
    await store.delete([(ids.local, "m")])
    assert not await store.add_thumbnail(ids.local, "m", t1)
    assert await store.get_thumbnail(ids.local, "m", 32, 32, "crop") is None


async def test_thumbnails_go_with_their_media_row(
    store: MediaStore, database: Database, ids: Ids
) -> None:
    """The foreign key: deleting a media row by any path deletes its thumbnails."""
    await store.add_uploaded(uploaded(ids.local, "m", ids.sha("m")))
    assert await store.add_thumbnail(ids.local, "m", thumb(ids.sha("t")))
    await database.execute("DELETE FROM media WHERE origin = $1 AND media_id = $2", ids.local, "m")
    assert await store.get_thumbnail(ids.local, "m", 32, 32, "scale") is None


class _PausedConnection:
    """A transaction's connection that stops right after deleting thumbnails."""

    def __init__(self, conn: Connection, paused: asyncio.Event, resume: asyncio.Event) -> None:
        self._conn, self._paused, self._resume = conn, paused, resume

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(sql, *args)

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        rows = await self._conn.fetch(sql, *args)
        if sql.startswith("DELETE FROM media_thumbnails"):
            self._paused.set()
            await self._resume.wait()
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._conn.fetchval(sql, *args)


class _PausingDatabase:
    """``database``, except that its transactions pause after deleting thumbnails."""

    def __init__(self, db: Database, paused: asyncio.Event, resume: asyncio.Event) -> None:
        self.dialect = db.dialect
        self._db, self._paused, self._resume = db, paused, resume

    async def execute(self, sql: str, *args: Any) -> None:
        await self._db.execute(sql, *args)

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        await self._db.executemany(sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._db.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._db.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._db.fetchval(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._db.transaction() as txn:
            yield _PausedConnection(txn, self._paused, self._resume)

    async def close(self) -> None:
        pass


async def test_a_thumbnail_added_during_a_delete_is_not_recorded(
    store: MediaStore, database: Database, ids: Ids
) -> None:
    """``add_thumbnail`` between a delete's thumbnail delete and its media delete: on
    PostgreSQL (READ COMMITTED) the thumbnail row used to be inserted and outlive its media
    row. Now it waits for the delete and reports "not recorded" (so the service removes the
    thumbnail's file); SQLite serialises the two writers anyway."""
    await store.add_uploaded(uploaded(ids.local, "m", ids.sha("m")))
    paused, resume = asyncio.Event(), asyncio.Event()
    deleting = MediaStore(_PausingDatabase(database, paused, resume))
    delete = asyncio.create_task(deleting.delete([(ids.local, "m")]))
    try:
        await paused.wait()
        add = asyncio.create_task(store.add_thumbnail(ids.local, "m", thumb(ids.sha("t"))))
        await asyncio.sleep(0.3)
        waited = not add.done()  # it waits for the delete's transaction
    finally:
        resume.set()  # never leave the delete's transaction open
    assert await delete == (1, {ids.sha("m")})
    assert await add is False
    assert waited
    assert await store.get(ids.local, "m") is None
    rows = await database.fetch("SELECT sha256 FROM media_thumbnails WHERE origin = $1", ids.local)
    assert rows == []
    assert await store.unreferenced([ids.sha("t")]) == {ids.sha("t")}


# touch


async def test_touch_moves_last_access_forward_only(store: MediaStore, ids: Ids) -> None:
    for media_id in ("a", "b", "c", "d"):
        await store.add_uploaded(uploaded(ids.local, media_id, ids.sha(media_id), ts=1_000))
    await store.add_uploaded(uploaded(ids.remote, "a", ids.sha("ra"), ts=1_000))

    await store.touch(
        [
            (ids.local, "a", 2_000),
            (ids.local, "b", 500),  # older than what is recorded: ignored
            (ids.local, "c", 3_000),
            (ids.local, "c", 2_500),  # a later, older entry for the same item: ignored
            (ids.local, "missing", 9_000),  # unknown: ignored
        ]
    )
    assert await last_access(store, ids.local, "a") == 2_000
    assert await last_access(store, ids.local, "b") == 1_000
    assert await last_access(store, ids.local, "c") == 3_000
    assert await last_access(store, ids.local, "d") == 1_000
    assert await last_access(store, ids.remote, "a") == 1_000
    assert await store.get(ids.local, "missing") is None

    await store.touch([(ids.remote, "a", 1_500), (ids.local, "a", 1_999)])
    assert await last_access(store, ids.remote, "a") == 1_500
    assert await last_access(store, ids.local, "a") == 2_000

    await store.touch([])  # an empty batch is a no-op
    assert await last_access(store, ids.local, "a") == 2_000
    # Touching changes nothing else.
    row = await store.get(ids.local, "a")
    assert row == uploaded(ids.local, "a", ids.sha("a"), ts=1_000, last_access_ts=2_000)


# delete / unreferenced


async def test_delete(store: MediaStore, ids: Ids) -> None:
    shared = ids.sha("shared")
    await store.add_uploaded(uploaded(ids.local, "a", shared))
    await store.add_uploaded(uploaded(ids.local, "b", ids.sha("b")))
    await store.add_uploaded(uploaded(ids.remote, "a", shared))
    await store.add_uploaded(uploaded(ids.other_remote, "c", ids.sha("c")))
    await store.add_pending(ids.local, "p", ids.user("alice"), now=0, expires_ts=10)
    assert await store.add_thumbnail(ids.local, "a", thumb(ids.sha("ta1"), 32, 32))
    assert await store.add_thumbnail(ids.local, "a", thumb(ids.sha("ta2"), 64, 64))
    assert await store.add_thumbnail(ids.remote, "a", thumb(ids.sha("tra"), 32, 32))

    assert await store.delete([]) == (0, set())

    count, hashes = await store.delete(
        [
            (ids.local, "a"),
            (ids.local, "p"),  # pending: a row, but no file
            (ids.other_remote, "c"),
            (ids.local, "unknown"),
            (ids.remote, "unknown"),
        ]
    )
    assert count == 3
    assert hashes == {shared, ids.sha("ta1"), ids.sha("ta2"), ids.sha("c")}
    for origin, media_id in ((ids.local, "a"), (ids.local, "p"), (ids.other_remote, "c")):
        assert await store.get(origin, media_id) is None
    assert await store.get_thumbnail(ids.local, "a", 32, 32, "scale") is None
    assert await store.get_thumbnail(ids.local, "a", 64, 64, "scale") is None
    # Same media ID on another origin, and other IDs on the same origin, are kept.
    assert await store.get(ids.remote, "a") is not None
    assert await store.get_thumbnail(ids.remote, "a", 32, 32, "scale") == thumb(
        ids.sha("tra"), 32, 32
    )
    assert await store.get(ids.local, "b") is not None
    # So the shared file is still in use; the thumbnails' and c's files are not.
    assert await store.unreferenced(sorted(hashes)) == {
        ids.sha("ta1"),
        ids.sha("ta2"),
        ids.sha("c"),
    }

    # Deleting again finds nothing.
    assert await store.delete([(ids.local, "a"), (ids.other_remote, "c")]) == (0, set())


async def test_delete_unless_named_keeps_what_an_event_names(
    store: MediaStore, database: Database, ids: Ids
) -> None:
    """A purge deletes the media its events alone used; one an event named meanwhile
    (checked in the deleting transaction) stays."""
    await store.add_uploaded(uploaded(ids.local, "named", ids.sha("named")))
    await store.add_uploaded(uploaded(ids.local, "free", ids.sha("free")))
    await database.execute(
        "INSERT INTO event_media (event_id, origin, media_id) VALUES ($1, $2, 'named')",
        f"$event-{ids.tag}",
        ids.local,
    )
    keys = [(ids.local, "named"), (ids.local, "free")]
    assert await store.delete(keys, unless_named=True) == (1, {ids.sha("free")})
    assert await store.get(ids.local, "named") is not None
    assert await store.get(ids.local, "free") is None
    # Without the flag (an admin's delete) the named one goes too.
    assert await store.delete(keys) == (1, {ids.sha("named")})


async def test_delete_more_than_a_chunk(store: MediaStore, ids: Ids) -> None:
    n = CHUNK * 2 + 5
    local = [(ids.local, f"m{i:04}") for i in range(n)]
    remote = [(ids.remote, f"m{i:04}") for i in range(n)]
    for origin, media_id in local + remote:
        await store.add_uploaded(uploaded(origin, media_id, ids.sha(f"{origin}/{media_id}")))
    # Thumbnails on items in the first and last chunk.
    for origin, media_id in (local[0], local[-1], remote[CHUNK]):
        assert await store.add_thumbnail(origin, media_id, thumb(ids.sha(f"t/{media_id}")))
    keep = (ids.remote, f"m{n:04}")
    await store.add_uploaded(uploaded(*keep, ids.sha("keep")))

    # Interleaved origins, plus unknown keys.
    keys: list[MediaKey] = [key for pair in zip(local, remote, strict=True) for key in pair]
    keys += [(ids.local, "unknown"), (ids.other_remote, "m0000")]
    count, hashes = await store.delete(keys)
    assert count == 2 * n
    expected = {ids.sha(f"{origin}/{media_id}") for origin, media_id in local + remote}
    expected |= {ids.sha(f"t/{local[0][1]}"), ids.sha(f"t/{local[-1][1]}")}
    expected |= {ids.sha(f"t/{remote[CHUNK][1]}")}
    assert hashes == expected
    for origin, media_id in (local[0], local[CHUNK], local[-1], remote[0], remote[-1]):
        assert await store.get(origin, media_id) is None
    assert await store.get_thumbnail(*local[-1], 32, 32, "scale") is None
    assert await store.get_thumbnail(*remote[CHUNK], 32, 32, "scale") is None
    assert await store.get(*keep) is not None
    assert await store.unreferenced(sorted(expected)) == expected


async def test_unreferenced(store: MediaStore, ids: Ids) -> None:
    in_media, in_thumb, in_both = ids.sha("media"), ids.sha("thumb"), ids.sha("both")
    await store.add_uploaded(uploaded(ids.local, "m", in_media))
    await store.add_uploaded(uploaded(ids.local, "n", in_both))
    assert await store.add_thumbnail(ids.local, "m", thumb(in_thumb))
    assert await store.add_thumbnail(ids.local, "n", thumb(in_both, 64, 64))
    unused = ids.sha("unused")

    assert await store.unreferenced([]) == set()
    assert await store.unreferenced([unused]) == {unused}
    # A hash named only by a thumbnail is in use.
    assert await store.unreferenced([in_media, in_thumb, in_both, unused]) == {unused}
    # Duplicates in the input do no harm.
    assert await store.unreferenced([unused, unused, in_thumb, in_thumb]) == {unused}

    # Once the rows go, the hashes are free.
    count, hashes = await store.delete([(ids.local, "m")])
    assert (count, hashes) == (1, {in_media, in_thumb})
    assert await store.unreferenced([in_media, in_thumb, in_both]) == {in_media, in_thumb}


async def test_unreferenced_more_than_a_chunk(store: MediaStore, ids: Ids) -> None:
    n = CHUNK * 2 + 7
    hashes = [ids.sha(f"h{i}") for i in range(n)]
    # Used: one in each chunk by a media row, one in each chunk by a thumbnail only.
    used_by_media = {hashes[i] for i in (0, CHUNK + 1, n - 1)}
    used_by_thumb = {hashes[i] for i in (1, CHUNK * 2, n - 2)}
    for i, h in enumerate(sorted(used_by_media)):
        await store.add_uploaded(uploaded(ids.local, f"m{i}", h))
    await store.add_uploaded(uploaded(ids.local, "holder", ids.sha("holder")))
    for i, h in enumerate(sorted(used_by_thumb)):
        assert await store.add_thumbnail(ids.local, "holder", thumb(h, 10 + i, 10 + i))

    assert await store.unreferenced(hashes) == set(hashes) - used_by_media - used_by_thumb
    assert await store.unreferenced(sorted(used_by_media | used_by_thumb)) == set()


# not_accessed_since


async def add_profile(database: Database, user_id: UserID, avatar_url: str | None) -> None:
    await database.execute(
        "INSERT INTO users (user_id, created_ts, avatar_url) VALUES ($1, $2, $3)",
        user_id,
        0,
        avatar_url,
    )


async def test_not_accessed_since(store: MediaStore, database: Database, ids: Ids) -> None:
    here, there, other = ids.local, ids.remote, ids.other_remote
    rows = [
        uploaded(here, "old", ids.sha("1"), last_access_ts=100),
        uploaded(here, "older", ids.sha("2"), last_access_ts=50),
        uploaded(here, "new", ids.sha("3"), last_access_ts=1_000),
        uploaded(here, "edge", ids.sha("4"), last_access_ts=500),  # not before 500
        uploaded(here, "quarantined", ids.sha("5"), last_access_ts=10, quarantined_by="@a:x"),
        uploaded(here, "avatar", ids.sha("6"), last_access_ts=20),
        uploaded(there, "old", ids.sha("7"), last_access_ts=30),
        uploaded(there, "new", ids.sha("8"), last_access_ts=2_000),
        uploaded(there, "avatar", ids.sha("9"), last_access_ts=40),
        uploaded(there, "quarantined", ids.sha("10"), last_access_ts=5, quarantined_by="@a:x"),
        uploaded(other, "old", ids.sha("11"), last_access_ts=60),
    ]
    for row in rows:
        await store.add_uploaded(row)
    # Pending: never counted, however old.
    await store.add_pending(here, "pending", ids.user("alice"), now=1, expires_ts=2)
    await store.add_pending(there, "pending", ids.user("alice"), now=1, expires_ts=2)
    await add_profile(database, ids.user("alice"), f"mxc://{here}/avatar")
    await add_profile(database, ids.user("bob"), f"mxc://{there}/avatar")
    await add_profile(database, ids.user("carol"), None)
    # A URL naming media that is not a row is harmless; a near miss keeps nothing.
    await add_profile(database, ids.user("dave"), f"mxc://{here}/gone")
    await add_profile(database, ids.user("erin"), f"mxc://{here}/ol")

    mine = {(row.origin, row.media_id) for row in rows}

    async def purge(local: bool, keep: bool, before: int = 500, limit: int = 100) -> list[MediaKey]:
        keys = await store.not_accessed_since(
            before, local_origin=here, local=local, keep_profile_media=keep, limit=limit
        )
        # Remote listings span every origin but this one: leave out other tests' rows.
        return [key for key in keys if key in mine]

    # Oldest first.
    assert await purge(local=True, keep=True) == [(here, "older"), (here, "old")]
    assert await purge(local=True, keep=False) == [(here, "avatar"), (here, "older"), (here, "old")]
    assert await purge(local=False, keep=True) == [(there, "old"), (other, "old")]
    assert await purge(local=False, keep=False) == [
        (there, "old"),
        (there, "avatar"),
        (other, "old"),
    ]

    # The cut-off is exclusive.
    assert await purge(local=True, keep=True, before=501) == [
        (here, "older"),
        (here, "old"),
        (here, "edge"),
    ]
    assert await purge(local=True, keep=False, before=20) == []
    assert await purge(local=True, keep=False, before=21) == [(here, "avatar")]

    # The limit takes the oldest.
    assert await purge(local=True, keep=False, limit=2) == [(here, "avatar"), (here, "older")]
    assert await purge(local=True, keep=True, limit=1) == [(here, "older")]
    assert await purge(local=True, keep=True, before=10_000, limit=100) == [
        (here, "older"),
        (here, "old"),
        (here, "edge"),
        (here, "new"),
    ]

    # Touching an item takes it out of the listing; releasing quarantine puts it in.
    await store.touch([(here, "older", 600)])
    assert await store.set_quarantined(here, "quarantined", None)
    assert await purge(local=True, keep=True) == [(here, "quarantined"), (here, "old")]

    # Once the avatar is no longer in the profile it is not kept.
    await database.execute(
        "UPDATE users SET avatar_url = NULL WHERE user_id = $1", ids.user("alice")
    )
    assert await purge(local=True, keep=True) == [
        (here, "quarantined"),
        (here, "avatar"),
        (here, "old"),
    ]
