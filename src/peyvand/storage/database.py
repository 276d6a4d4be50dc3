"""One async database interface, two drivers (SQLite and PostgreSQL).

SQL is written once, with PostgreSQL's ``$1`` placeholders, and runs unchanged on both
backends: the SQLite driver rewrites ``$n`` to SQLite's numbered ``?n``. Migrations are
written once too (``migrations/NNN_name.sql``), per backend only where the dialects differ
(``migrations/<dialect>/NNN_name.sql``).

Rows support both ``row[0]`` and ``row["column"]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol, runtime_checkable

Dialect = Literal["sqlite", "postgres"]


class Row(Protocol):
    def __getitem__(self, key: int | str, /) -> Any: ...


class Connection(Protocol):
    """Statements on one connection; inside ``Database.transaction()`` they share a txn."""

    async def execute(self, sql: str, *args: Any) -> None: ...

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None: ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    async def fetchval(self, sql: str, *args: Any) -> Any: ...


class Database(Connection, Protocol):
    """A pool: plain calls run in their own implicit transaction (autocommit)."""

    dialect: Dialect

    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """A read-write transaction; committed on normal exit, rolled back on error."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class AdvisoryLocks(Protocol):
    """A database shared by processes that can hold a named lock for as long as a
    session lives (PostgreSQL's ``PostgresDatabase.advisory_lock``); told apart without
    importing its driver, which a SQLite server never loads."""

    def advisory_lock(
        self, key: int, *, wait: bool = True, on_lost: Callable[[], None] | None = None
    ) -> AbstractAsyncContextManager[bool]: ...


async def iter_chunks(items: Sequence[Any], size: int) -> AsyncIterator[Sequence[Any]]:
    """Yield ``items`` in slices of ``size`` (for batched IN-lists and deletes)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def placeholders(count: int, start: int = 1) -> str:
    """``$start, $start+1, ...`` for an IN-list of ``count`` values."""
    return ", ".join(f"${i}" for i in range(start, start + count))
