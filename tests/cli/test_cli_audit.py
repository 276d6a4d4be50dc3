"""``peyvand audit verify`` as an operator runs it (``python -m peyvand`` in a child
process), on the SQLite database of a config made by ``peyvand generate-config``."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from peyvand.compliance.audit import AuditAction, AuditLog
from peyvand.config.loader import load_config
from peyvand.storage.audit import AuditStore
from peyvand.storage.migrations import run_migrations
from peyvand.storage.sqlite import SqliteDatabase

ADMIN = "@admin:example.org"


def peyvand(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peyvand", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


async def test_audit_verify_reports_an_intact_log_and_names_a_tampered_entry(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    generated = peyvand("generate-config", "--server-name", "example.org", "--data-dir", data_dir)
    assert generated.returncode == 0, generated.stderr
    config_path = data_dir / "peyvand.toml"

    fresh = peyvand("audit", "verify", "--config", config_path)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout == "audit log OK: 0 entries\n"

    db = await SqliteDatabase.open(load_config(config_path).database.sqlite_path)
    try:
        await run_migrations(db)  # a no-op: verify brought the schema up to date
        log = AuditLog(AuditStore(db))
        await log.record(ADMIN, AuditAction.HOLD, "!room:example.org", reason="case 17")
        await log.record(ADMIN, AuditAction.EXPORT, "@bob:example.org", details={"rooms": 2})
        await log.record(ADMIN, AuditAction.RELEASE, "!room:example.org", reason="closed")
        last_hash = (await log.entries(2, 1))[0]["hash"]
    finally:
        await db.close()

    intact = peyvand("audit", "verify", "--config", config_path)
    assert intact.returncode == 0, intact.stderr
    assert intact.stdout == f"audit log OK: 3 entries\nlast entry 3, hash {last_hash}\n"

    # Someone with access to the database file rewrites the reason of entry 2.
    conn = sqlite3.connect(load_config(config_path).database.sqlite_path)
    try:
        with conn:
            conn.execute("DROP TRIGGER audit_log_no_update")
            conn.execute("UPDATE audit_log SET reason = 'routine' WHERE seq = 2")
    finally:
        conn.close()

    tampered = peyvand("audit", "verify", "--config", config_path)
    assert tampered.returncode == 1
    assert tampered.stdout == ""
    assert tampered.stderr == (
        "peyvand audit: audit log TAMPERED at entry 2: hash does not match the entry's contents\n"
    )


def test_audit_needs_a_subcommand_and_a_config(tmp_path: Path) -> None:
    bare = peyvand("audit")
    assert bare.returncode == 2
    assert "COMMAND" in bare.stderr

    missing = peyvand("audit", "verify", "--config", tmp_path / "nowhere.toml")
    assert missing.returncode == 1
    assert missing.stderr.startswith("peyvand audit: ")
    assert "nowhere.toml" in missing.stderr
