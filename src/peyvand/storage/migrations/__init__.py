"""Numbered schema migrations, written once: ``NNN_name.sql`` here when both dialects run
the same SQL, ``<dialect>/NNN_name.sql`` (one file in each dialect's folder) where they
differ. A version is either shared or per dialect, never both.

Each migration runs in one transaction together with its ``schema_migrations`` row (its
version and file name, wherever the file lives), so a crash mid-migration leaves the
schema at the previous version. On PostgreSQL the run holds an advisory lock, so the
processes of a deployment started together migrate one after the other: the later ones
find the versions applied and skip them.
"""

from __future__ import annotations

import re
from contextlib import AbstractAsyncContextManager, nullcontext
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Protocol, get_args

from peyvand.storage.database import AdvisoryLocks, Database, Dialect

_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_ROOT = resources.files(__package__)
# The advisory lock key serialising migrations among processes (any fixed 64-bit number;
# this one spells "peyvmigr" in ASCII).
MIGRATIONS_LOCK = 0x706579766D696772


class _ScriptDatabase(Database, Protocol):
    async def executescript(self, script: str) -> None: ...


def _scripts(folder: Traversable, label: str) -> dict[int, Traversable]:
    """The migration files directly in ``folder`` (none if it does not exist), by version."""
    if not folder.is_dir():
        return {}
    found: dict[int, Traversable] = {}
    for entry in sorted(folder.iterdir(), key=lambda entry: entry.name):
        match = _NAME.match(entry.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise RuntimeError(
                f"duplicate migration number {version:03d} in {label}: "
                f"{found[version].name} and {entry.name}"
            )
        found[version] = entry
    return found


def available_migrations(dialect: str, root: Traversable = _ROOT) -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` for every migration of ``dialect`` under ``root``, in order.

    Refuses a version that is both shared and specific to ``dialect``: one of the two
    would silently never run.
    """
    if dialect not in get_args(Dialect):
        raise ValueError(f"unknown dialect {dialect!r}")
    shared = _scripts(root, "the shared migrations")
    specific = _scripts(root.joinpath(dialect), f"the {dialect} migrations")
    both = sorted(shared.keys() & specific.keys())
    if both:
        clashes = ", ".join(f"{shared[v].name} and {dialect}/{specific[v].name}" for v in both)
        raise RuntimeError(
            f"migrations both shared and specific to {dialect}: {clashes}; keep the shared "
            "file if both dialects run the same SQL, else one file in each dialect's folder"
        )
    scripts = shared | specific
    return [
        (version, scripts[version].name, scripts[version].read_text(encoding="utf-8"))
        for version in sorted(scripts)
    ]


async def run_migrations(db: _ScriptDatabase) -> list[int]:
    """Apply every migration newer than the database's schema; return those applied.

    On PostgreSQL, under an advisory lock taken before anything is read or created: two
    processes migrating a fresh database at once otherwise both create the same tables
    and one fails on a duplicate. SQLite has one process at a time (no deployment)."""
    lock: AbstractAsyncContextManager[object] = (
        db.advisory_lock(MIGRATIONS_LOCK) if isinstance(db, AdvisoryLocks) else nullcontext()
    )
    async with lock:
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
