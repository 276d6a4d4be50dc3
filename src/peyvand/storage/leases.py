"""Leases on named jobs (schema 047), shared by every process of a deployment through
its database: at most one holder per name whose lease has not expired.

Times are the callers' clocks in milliseconds since the epoch; the processes of one
deployment are expected to keep their clocks in step (NTP), well within a lease period.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from peyvand.storage.database import AdvisoryLocks, Connection, Database


def _lock_key(text: str) -> int:
    """An advisory lock key: a signed 64-bit number from ``text``'s hash."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def instance_lock_key(instance: str) -> int:
    """The advisory lock key a live process named ``instance`` holds."""
    return _lock_key(f"peyvand instance {instance}")


def contender_key(name: str, holder: str) -> int:
    """The advisory lock key ``holder`` holds while it contends for the lease ``name``
    that is its own (``LeaseStore.contending``)."""
    return _lock_key(f"peyvand lease {name} contender {holder}")


async def not_running(txn: Connection, instance: str) -> bool:
    """Inside a transaction: no live process holds ``instance``'s name; if so, none can
    take it before the transaction ends (its lock is held for it)."""
    return bool(
        await txn.fetchval("SELECT pg_try_advisory_xact_lock($1)", instance_lock_key(instance))
    )


class LeaseStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def try_acquire(
        self, name: str, holder: str, token: str, now_ms: int, expires_ms: int
    ) -> bool:
        """Take the lease ``name`` for ``holder`` until ``expires_ms`` if nobody holds it,
        its lease has expired by ``now_ms``, or ``holder`` itself held it (a restarted
        process takes its own lease back at once: one live process per name, which
        ``wiring.leased.InstanceName`` makes sure of). True when taken."""
        async with self._db.transaction() as txn:
            taken = await txn.fetchval(
                "INSERT INTO leases (name, holder, token, expires_ts) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                "token = excluded.token, expires_ts = excluded.expires_ts "
                "WHERE leases.expires_ts <= $5 OR leases.holder = excluded.holder "
                "RETURNING token",
                name,
                holder,
                token,
                expires_ms,
                now_ms,
            )
        return bool(taken == token)

    async def renew(self, name: str, token: str, expires_ms: int) -> bool:
        """Extend the holding ``token`` of ``name`` to ``expires_ms``; False when it is no
        longer the holding (taken over after it expired, or released)."""
        async with self._db.transaction() as txn:
            renewed = await txn.fetchval(
                "UPDATE leases SET expires_ts = $3 WHERE name = $1 AND token = $2 RETURNING name",
                name,
                token,
                expires_ms,
            )
        return renewed is not None

    def contending(
        self, name: str, holder: str, on_lost: Callable[[], None]
    ) -> AbstractAsyncContextManager[bool]:
        """Hold, for the block, the lock telling that ``holder`` contends for the lease
        ``name`` it owns (False: not taken; ``on_lost`` when its connection drops).
        PostgreSQL only: a deployment's database."""
        if not isinstance(self._db, AdvisoryLocks):
            raise TypeError("leases owned by a process need PostgreSQL")
        return self._db.advisory_lock(contender_key(name, holder), wait=False, on_lost=on_lost)

    async def contends(self, name: str, holder: str) -> bool:
        """Whether ``holder`` contends for the lease ``name`` it owns now (holds the lock
        of ``contending``). Asked with a shared lock: other processes asking at once do
        not answer each other."""
        async with self._db.transaction() as txn:
            free = await txn.fetchval(
                "SELECT pg_try_advisory_xact_lock_shared($1)", contender_key(name, holder)
            )
        return not free

    async def release(self, name: str, token: str) -> None:
        """Give the lease up (a clean stop) so another process takes it at once."""
        await self._db.execute("DELETE FROM leases WHERE name = $1 AND token = $2", name, token)

    async def holders(self) -> dict[str, tuple[str, int]]:
        """Every lease: its holder and expiry (for the admin API and tests)."""
        rows = await self._db.fetch("SELECT name, holder, expires_ts FROM leases")
        return {str(row[0]): (str(row[1]), int(row[2])) for row in rows}
