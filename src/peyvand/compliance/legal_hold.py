"""Legal holds (docs/compliance.md): content an admin has ordered preserved.

An admin places a hold on a user (every event they sent) or a room (every event in it),
for a case, optionally limited to events whose ``origin_server_ts`` lies in
``[since_ts, until_ts]`` (milliseconds, both ends inclusive, either open). Until the hold
is released, held events are exempt from retention, disappearing-message timers,
redaction purges and erasure: every feature that deletes or rewrites stored events asks
``held`` first and leaves the events it names alone. (Clients still see a redacted event
as redacted; a hold keeps only the stored original.)

Placing and releasing a hold are recorded in the audit log; a released hold stays in the
table with who released it, when and why.
"""

from __future__ import annotations

import builtins
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import NamedTuple

from peyvand.compliance.audit import AuditAction, AuditLog
from peyvand.errors import Errcode, MatrixError
from peyvand.storage.legal_holds import Hold, HoldKind, LegalHoldStore
from peyvand.types import JsonDict, is_valid_user_id, split_id

__all__ = ["HeldQuery", "Hold", "LegalHolds", "hold_json"]

KINDS: tuple[HoldKind, ...] = ("room", "user")

# Canonical JSON's integer range (the audit log's details must be canonical JSON).
_MAX_TS = 2**53 - 1
# Room version 12 room IDs: "!" and the create event's reference hash (unpadded URL-safe
# base64 of a SHA-256); earlier versions use "!opaque:server".
_HASH_ROOM_ID = re.compile(r"![A-Za-z0-9_-]{43}")


class HeldQuery(NamedTuple):
    """An event a caller is about to delete or rewrite, as ``held`` needs to know it."""

    event_id: str
    room_id: str
    sender: str
    origin_server_ts: int


class LegalHolds:
    def __init__(
        self, store: LegalHoldStore, audit: AuditLog, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock

    async def place(
        self,
        actor: str,
        kind: str,
        target: str,
        case_id: str,
        reason: str,
        since_ts: int | None = None,
        until_ts: int | None = None,
    ) -> Hold:
        """Place a hold on ``target`` (a user ID for kind ``user``, a room ID for ``room``);
        ``M_INVALID_PARAM`` if anything is malformed. Recorded in the audit log."""
        hold_kind = _check_kind(kind)
        if hold_kind == "user" and not is_valid_user_id(target):
            raise MatrixError(Errcode.INVALID_PARAM, f"Not a user ID: {target!r}")
        if hold_kind == "room" and not _is_room_id(target):
            raise MatrixError(Errcode.INVALID_PARAM, f"Not a room ID: {target!r}")
        _check_text("case_id", case_id)
        _check_text("reason", reason)
        for name, ts in (("since_ts", since_ts), ("until_ts", until_ts)):
            if ts is not None and not 0 <= ts <= _MAX_TS:
                raise MatrixError(Errcode.INVALID_PARAM, f"'{name}' is out of range")
        if since_ts is not None and until_ts is not None and since_ts > until_ts:
            raise MatrixError(Errcode.INVALID_PARAM, "'since_ts' is after 'until_ts'")

        hold = Hold(
            hold_id=secrets.token_hex(10),
            kind=hold_kind,
            target=target,
            case_id=case_id,
            reason=reason,
            since_ts=since_ts,
            until_ts=until_ts,
            created_by=actor,
            created_ts=self._now_ms(),
        )
        # The hold first: should the audit append fail, content stays preserved.
        await self._store.create(hold)
        await self._audit.record(
            actor,
            AuditAction.HOLD,
            target,
            reason=reason,
            details={
                "hold_id": hold.hold_id,
                "kind": hold.kind,
                "case_id": case_id,
                "since_ts": since_ts,
                "until_ts": until_ts,
            },
        )
        return hold

    async def release(self, actor: str, hold_id: str, reason: str) -> Hold:
        """Release an active hold; ``M_NOT_FOUND`` if there is none with this ID (or it
        was released already). Recorded in the audit log."""
        _check_text("reason", reason)
        hold = await self._store.release(hold_id, actor, self._now_ms(), reason)
        if hold is None:
            existing = await self._store.get(hold_id)
            if existing is None:
                raise MatrixError(Errcode.NOT_FOUND, "Unknown legal hold")
            raise MatrixError(Errcode.NOT_FOUND, "Legal hold already released")
        await self._audit.record(
            actor,
            AuditAction.RELEASE,
            hold.target,
            reason=reason,
            details={"hold_id": hold.hold_id, "kind": hold.kind, "case_id": hold.case_id},
        )
        return hold

    async def get(self, hold_id: str) -> Hold:
        """The hold, released or not; ``M_NOT_FOUND`` if there is none with this ID."""
        hold = await self._store.get(hold_id)
        if hold is None:
            raise MatrixError(Errcode.NOT_FOUND, "Unknown legal hold")
        return hold

    async def list(self, active_only: bool = True) -> builtins.list[Hold]:
        """The active holds (or every hold ever placed), oldest first."""
        return await self._store.list(active_only=active_only)

    async def held(self, events: Sequence[HeldQuery]) -> set[str]:
        """The IDs of those ``events`` an active hold covers: a room hold on the event's
        room or a user hold on its sender, whose range (if any) holds its
        ``origin_server_ts``. One query for the whole batch."""
        if not events:
            return set()
        holds = await self._store.active_for(
            {e.room_id for e in events}, {e.sender for e in events}
        )
        return covered(holds, events)

    async def user_held(self, user_id: str) -> bool:
        """Whether an active user hold names ``user_id`` (whatever its range): erasing or
        deactivating the account must then keep the user's held content. Events in held
        rooms are ``held``'s concern."""
        return bool(await self._store.active_for((), (user_id,)))

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def covered(holds: Sequence[Hold], events: Sequence[HeldQuery]) -> set[str]:
    """The IDs of the ``events`` one of the (active) ``holds`` covers; pure matching."""
    by_room: defaultdict[str, list[Hold]] = defaultdict(list)
    by_user: defaultdict[str, list[Hold]] = defaultdict(list)
    for hold in holds:
        (by_room if hold.kind == "room" else by_user)[hold.target].append(hold)
    found = set()
    for event in events:
        candidates = by_room.get(event.room_id, []) + by_user.get(event.sender, [])
        if any(_in_range(h, event.origin_server_ts) for h in candidates):
            found.add(event.event_id)
    return found


def _in_range(hold: Hold, ts: int) -> bool:
    return (hold.since_ts is None or hold.since_ts <= ts) and (
        hold.until_ts is None or ts <= hold.until_ts
    )


def hold_json(hold: Hold) -> JsonDict:
    """A hold as the admin API shows it."""
    return {
        "hold_id": hold.hold_id,
        "kind": hold.kind,
        "target": hold.target,
        "case_id": hold.case_id,
        "reason": hold.reason,
        "since_ts": hold.since_ts,
        "until_ts": hold.until_ts,
        "created_by": hold.created_by,
        "created_ts": hold.created_ts,
        "active": hold.active,
        "released_by": hold.released_by,
        "released_ts": hold.released_ts,
        "release_reason": hold.release_reason,
    }


def _check_kind(kind: str) -> HoldKind:
    for known in KINDS:
        if kind == known:
            return known
    raise MatrixError(Errcode.INVALID_PARAM, "'kind' must be one of room, user")


def _check_text(name: str, value: str) -> None:
    if not value.strip():
        raise MatrixError(Errcode.INVALID_PARAM, f"'{name}' must not be empty")


def _is_room_id(room_id: str) -> bool:
    if len(room_id.encode()) > 255:
        return False
    if _HASH_ROOM_ID.fullmatch(room_id):
        return True
    try:
        opaque, _ = split_id(room_id, "!")
    except ValueError:
        return False
    return bool(opaque)
