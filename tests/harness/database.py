"""Read a running test server's database directly, to check what the API cannot show
(rows left behind, files and rows agreeing). Read-only: never write under a live server."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

import asyncpg

from harness.server import HomeserverProcess
from peyvand.config.loader import load_config


async def query(server: HomeserverProcess, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``$n`` placeholders on both backends) on ``server``'s database."""
    database = load_config(server.config_path).database
    if database.is_postgres:
        connection = await asyncpg.connect(database.url)
        try:
            return [tuple(row) for row in await connection.fetch(sql, *args)]
        finally:
            await connection.close()
    sqlite_sql = sql
    for index in range(len(args), 0, -1):
        sqlite_sql = sqlite_sql.replace(f"${index}", f"?{index}")
    uri = f"file:{database.sqlite_path}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as connection:
        return [tuple(row) for row in connection.execute(sqlite_sql, args).fetchall()]
