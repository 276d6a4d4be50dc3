"""Numbered schema migrations, one directory per dialect: ``<dialect>/NNN_name.sql``.

Each migration runs in one transaction together with its ``schema_migrations`` row, so a
crash mid-migration leaves the schema at the previous version.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Protocol

from peyvand.storage.database import Database

_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


class _ScriptDatabase(Database, Protocol):
    async def executescript(self, script: str) -> None: ...


def available_migrations(dialect: str) -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` for every migration of ``dialect``, in order."""
    folder = resources.files(__package__).joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers for {dialect}: {versions}")
    return found


async def run_migrations(db: _ScriptDatabase) -> list[int]:
    """Apply every migration newer than the database's schema; return those applied."""
    await db.executescript(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL)"
    )
    done = {row[0] for row in await db.fetch("SELECT version FROM schema_migrations")}
    applied = []
    for version, name, sql in available_migrations(db.dialect):
        if version in done:
            continue
        record = f"INSERT INTO schema_migrations (version, name) VALUES ({version}, '{name}');"
        await db.executescript(f"BEGIN;\n{sql}\n{record}\nCOMMIT;")
        applied.append(version)
    return applied
