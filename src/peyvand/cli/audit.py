"""``peyvand audit verify``: re-compute the audit log's hash chain (docs/compliance.md).

Reads the log over a database connection of its own; the server may be running. Like
``register-user``, it first brings the schema up to date (a database the server never
opened gets an empty log).
"""

from __future__ import annotations

from peyvand.app import open_database
from peyvand.cli.errors import CommandError
from peyvand.compliance.audit import AuditLog
from peyvand.config.model import Config
from peyvand.storage.audit import AuditStore
from peyvand.storage.migrations import run_migrations


async def verify_audit_log(config: Config) -> str:
    """The report for an intact log; ``CommandError`` naming the first bad entry if not."""
    db = await open_database(config.database)
    try:
        await run_migrations(db)
        result = await AuditLog(AuditStore(db)).verify()
    finally:
        await db.close()
    if not result.ok:
        raise CommandError(f"audit log TAMPERED at entry {result.first_bad_seq}: {result.problem}")
    noun = "entry" if result.entries == 1 else "entries"
    report = f"audit log OK: {result.entries} {noun}"
    if result.last_hash is not None:
        report += f"\nlast entry {result.entries}, hash {result.last_hash}"
    return report
