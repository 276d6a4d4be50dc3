"""Content reports (Client-Server API "Reporting content"): users report an event, a room or
a user; the reports are kept for the server's admins (``/_peyvand/admin/v1/reports``).

Room and event reports need the reporter to be, or to have been, in the room (anything
else is 404, as the spec allows, so a report reveals nothing about rooms the reporter
cannot see); the event must be in that room. User reports need a user this server knows:
a local account or a member of some room here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from peyvand.errors import Errcode, MatrixError
from peyvand.services.timeline.room_state import StateService
from peyvand.storage.reports import Report as Report
from peyvand.storage.reports import ReportStore
from peyvand.types import EventID, RoomID, UserID, is_valid_user_id

MAX_REASON_LENGTH = 1000
# Memberships that mean "is or was in the room" (a ban or leave follows a join, usually).
_MEMBER_OR_FORMER = frozenset({"join", "leave", "ban"})


class ReportService:
    def __init__(
        self,
        store: ReportStore,
        state: StateService,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._state = state
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    @staticmethod
    def _check_reason(reason: str) -> None:
        if len(reason) > MAX_REASON_LENGTH:
            raise MatrixError(
                Errcode.INVALID_PARAM, f"'reason' must be at most {MAX_REASON_LENGTH} characters"
            )

    async def _check_member(self, reporter: UserID, room_id: RoomID, what: str) -> None:
        snapshot = await self._state.get_room(room_id)
        if snapshot is None or snapshot.memberships.get(reporter) not in _MEMBER_OR_FORMER:
            raise MatrixError(
                Errcode.NOT_FOUND, f"The {what} was not found or you are not in the room"
            )

    async def report_event(
        self,
        reporter: UserID,
        room_id: RoomID,
        event_id: EventID,
        reason: str,
        score: int | None = None,
    ) -> int:
        self._check_reason(reason)
        await self._check_member(reporter, room_id, "event")
        stored = await self._state.get_event(event_id)
        if stored is None or stored.pdu.room_id != room_id:
            raise MatrixError(
                Errcode.NOT_FOUND, "The event was not found or you are not in the room"
            )
        return await self._store.add(
            "event",
            reporter,
            reason,
            self._now_ms(),
            room_id=room_id,
            event_id=event_id,
            score=score,
        )

    async def report_room(self, reporter: UserID, room_id: RoomID, reason: str) -> int:
        self._check_reason(reason)
        await self._check_member(reporter, room_id, "room")
        return await self._store.add("room", reporter, reason, self._now_ms(), room_id=room_id)

    async def report_user(self, reporter: UserID, user_id: str, reason: str) -> int:
        self._check_reason(reason)
        if not is_valid_user_id(user_id) or not await self._store.user_known(user_id):
            raise MatrixError(Errcode.NOT_FOUND, "The user was not found")
        return await self._store.add("user", reporter, reason, self._now_ms(), user_id=user_id)

    async def list(self, *, before: int | None, limit: int) -> tuple[list[Report], int]:
        """Up to ``limit`` reports newest first (IDs below ``before``), and the total."""
        return await self._store.list(before=before, limit=limit), await self._store.count()

    async def get(self, report_id: int) -> Report | None:
        return await self._store.get(report_id)
