"""PostgreSQL driver (asyncpg pool). SQL arrives already in PostgreSQL's ``$n`` form."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from peyvand.storage.database import Connection, Dialect, Row
from peyvand.storage.errors import ConflictError, StorageError


class _PgConnection:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        try:
            await self._conn.execute(sql, *args)
        except asyncpg.UniqueViolationError as exc:
            raise ConflictError(str(exc)) from exc
        except asyncpg.PostgresError as exc:
            raise StorageError(str(exc)) from exc

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        try:
            await self._conn.executemany(sql, list(args))
        except asyncpg.UniqueViolationError as exc:
            raise ConflictError(str(exc)) from exc
        except asyncpg.PostgresError as exc:
            raise StorageError(str(exc)) from exc

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            return list(await self._conn.fetch(sql, *args))
        except asyncpg.PostgresError as exc:
            raise StorageError(str(exc)) from exc

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        try:
            row: Row | None = await self._conn.fetchrow(sql, *args)
            return row
        except asyncpg.PostgresError as exc:
            raise StorageError(str(exc)) from exc

    async def fetchval(self, sql: str, *args: Any) -> Any:
        try:
            return await self._conn.fetchval(sql, *args)
        except asyncpg.PostgresError as exc:
            raise StorageError(str(exc)) from exc


class PostgresDatabase:
    dialect: Dialect = "postgres"

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._plain = _PgConnection(pool)

    @classmethod
    async def open(cls, dsn: str, *, min_size: int = 2, max_size: int = 10) -> PostgresDatabase:
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
        return cls(pool)

    def pool_usage(self) -> tuple[int, int, int]:
        """The pool's connections: open, in use, and the most it opens (for metrics)."""
        size = self._pool.get_size()
        return size, size - self._pool.get_idle_size(), self._pool.get_max_size()

    async def execute(self, sql: str, *args: Any) -> None:
        await self._plain.execute(sql, *args)

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        await self._plain.executemany(sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._plain.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._plain.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._plain.fetchval(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PgConnection(conn)

    async def executescript(self, script: str) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(script)

    @asynccontextmanager
    async def advisory_lock(
        self, key: int, *, wait: bool = True, on_lost: Callable[[], None] | None = None
    ) -> AsyncIterator[bool]:
        """Hold the session-level advisory lock ``key`` (a signed 64-bit number) on a
        connection of its own for the block: shared with every process on the database,
        and let go when the block ends or the connection drops (``on_lost`` is then
        called, if the block has not ended). Waits for it, or with ``wait=False`` yields
        False at once when another session holds it."""
        async with self._pool.acquire() as conn:
            if wait:
                await conn.execute("SELECT pg_advisory_lock($1)", key)
                held = True
            else:
                held = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))
            listener = _calling(on_lost) if held and on_lost is not None else None
            if listener is not None:
                conn.add_termination_listener(listener)
            try:
                yield held
            finally:
                if listener is not None:
                    conn.remove_termination_listener(listener)
                # A connection lost meanwhile took its session's locks with it.
                if held:
                    with contextlib.suppress(
                        asyncpg.PostgresError,
                        asyncpg.InterfaceError,
                        asyncpg.InternalClientError,
                        OSError,
                    ):
                        await conn.execute("SELECT pg_advisory_unlock($1)", key)

    async def close(self) -> None:
        await self._pool.close()


def _calling(on_lost: Callable[[], None]) -> Callable[[object], None]:
    """A connection's termination listener that calls ``on_lost``."""
    return lambda _connection: on_lost()
