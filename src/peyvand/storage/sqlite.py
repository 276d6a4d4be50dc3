"""SQLite driver (the embedded default): WAL, one writer connection, a few readers.

Writes are serialised on the single writer connection (SQLite allows one writer at a
time anyway); reads go to reader connections, which WAL lets run beside the writer.
``synchronous=FULL`` makes every committed transaction survive a crash of the process or
of the machine; group commit upstream keeps that cheap.

Each connection has its own page cache (``PRAGMA cache_size``), allocated in the process
as it fills; pages beyond it are read again from the operating system's file cache,
which is shared and not counted in the process's memory. So a small cache per connection
costs a system call per page missed, not a disk read, while the database is cached there.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import aiosqlite

from peyvand.storage.database import Connection, Dialect, Row
from peyvand.storage.errors import ConflictError, StorageError

_PLACEHOLDER = re.compile(r"\$(\d+)")
# Page cache per connection, in KiB (SQLite's own default is 2,000).
DEFAULT_CACHE_KIB = 256


@lru_cache(maxsize=4096)
def _translate(sql: str) -> str:
    return _PLACEHOLDER.sub(r"?\1", sql)


def _convert(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def _args(args: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(_convert(a) for a in args)


class _SqliteConnection:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        try:
            await self._conn.execute(_translate(sql), _args(args))
        except sqlite3.IntegrityError as exc:
            raise ConflictError(str(exc)) from exc
        except sqlite3.Error as exc:
            raise StorageError(str(exc)) from exc

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        try:
            await self._conn.executemany(_translate(sql), [_args(a) for a in args])
        except sqlite3.IntegrityError as exc:
            raise ConflictError(str(exc)) from exc
        except sqlite3.Error as exc:
            raise StorageError(str(exc)) from exc

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            return list(await self._conn.execute_fetchall(_translate(sql), _args(args)))
        except sqlite3.Error as exc:
            raise StorageError(str(exc)) from exc

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]


class SqliteDatabase:
    dialect: Dialect = "sqlite"

    def __init__(self, writer: aiosqlite.Connection, readers: list[aiosqlite.Connection]) -> None:
        self._writer = writer
        self._write = _SqliteConnection(writer)
        self._readers = [_SqliteConnection(r) for r in readers]
        self._reader_connections = readers
        self._next_reader = itertools.cycle(range(len(readers)))
        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, path: str, *, readers: int = 2, cache_kib: int = DEFAULT_CACHE_KIB
    ) -> SqliteDatabase:
        """``cache_kib``: the page cache of each connection (the writer and every reader)."""

        async def connect(write: bool) -> aiosqlite.Connection:
            conn = await aiosqlite.connect(path, isolation_level=None)
            conn.row_factory = sqlite3.Row
            await conn.execute("PRAGMA busy_timeout = 10000")
            await conn.execute("PRAGMA foreign_keys = ON")
            # A negative cache_size is a size in KiB rather than in pages.
            await conn.execute(f"PRAGMA cache_size = {-int(cache_kib)}")
            if write:
                await conn.execute("PRAGMA journal_mode = WAL")
                await conn.execute("PRAGMA synchronous = FULL")
                # Deleted content is overwritten, not left in free pages (retention,
                # erasure: docs/compliance.md).
                await conn.execute("PRAGMA secure_delete = ON")
            else:
                await conn.execute("PRAGMA query_only = ON")
            return conn

        writer = await connect(True)
        reader_conns = [await connect(False) for _ in range(max(1, readers))]
        return cls(writer, reader_conns)

    def pool_usage(self) -> tuple[int, int, int]:
        """The connections: open, in use (the writer's, when a write holds it: the
        readers' use is not tracked), and the most there are (for metrics)."""
        size = 1 + len(self._readers)
        return size, int(self._lock.locked()), size

    def _reader(self) -> _SqliteConnection:
        return self._readers[next(self._next_reader)]

    async def execute(self, sql: str, *args: Any) -> None:
        async with self._lock:
            await self._write.execute(sql, *args)

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        async with self.transaction() as txn:
            await txn.executemany(sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._reader().fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._reader().fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._reader().fetchval(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """One write transaction under the writer's lock. BEGIN, COMMIT and ROLLBACK run to
        their end even when the caller is cancelled meanwhile (the statement goes on in
        the connection's thread regardless): a cancelled BEGIN is rolled back, so a task
        cancelled at the wrong moment never leaves the writer inside a transaction that
        every later write would then fail on."""
        async with self._lock:
            try:
                await self._to_the_end("BEGIN IMMEDIATE")
            except asyncio.CancelledError:
                await self._to_the_end("ROLLBACK")
                raise
            try:
                yield self._write
            except BaseException:
                await self._to_the_end("ROLLBACK")
                raise
            try:
                await self._to_the_end("COMMIT")
            except sqlite3.Error as exc:
                await self._to_the_end("ROLLBACK")
                raise StorageError(str(exc)) from exc

    async def _to_the_end(self, sql: str) -> None:
        """Run ``sql`` on the writer and wait for it to finish, also through a
        cancellation, which is raised once it has."""
        statement = asyncio.ensure_future(self._writer.execute(sql))
        cancelled = False
        while not statement.done():
            try:
                await asyncio.shield(statement)
            except asyncio.CancelledError:
                cancelled = True
        statement.result()
        if cancelled:
            raise asyncio.CancelledError

    async def executescript(self, script: str) -> None:
        async with self._lock:
            await self._writer.executescript(script)

    async def close(self) -> None:
        for conn in [*self._reader_connections, self._writer]:
            await conn.close()
