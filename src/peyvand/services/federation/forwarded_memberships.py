"""Memberships in rooms on other servers made by their room's event writer (issue 21).

Joining a room this server is not in (make_join/send_join), knocking on one and
rejecting an invite to one store events, or a membership at an events position, of that
room: its writer (``RoomOwners``) does it. Another process (the primary writer, which
takes the client's membership requests) posts the request to the writer's internal API
(``POST /_peyvand/internal/v1/federation/membership``: ``{"op": "join" | "knock" |
"reject", "room_id", "user_id", ...}``), answered with ``{"position"}`` once done there
(the user's new membership's events stream position, or the writer's: announced here
before the caller goes on), or the writer's Matrix error, raised here unchanged.
"""

from __future__ import annotations

from typing import Any, Final

from peyvand.errors import Errcode, MatrixError
from peyvand.services.federation.forwarded_pdus import unavailable
from peyvand.services.timeline.forwarding import SLOW_SECONDS, ForwardedWrites
from peyvand.services.timeline.room_owners import RoomOwners
from peyvand.types import JsonDict, RoomID, ServerName, UserID

MEMBERSHIP_PATH: Final = "/_peyvand/internal/v1/federation/membership"
OPERATIONS: Final = ("join", "knock", "reject")


class ForwardedMemberships:
    def __init__(self, writes: ForwardedWrites, owners: RoomOwners, instance: str) -> None:
        self._writes = writes
        self._owners = owners
        self._instance = instance

    def writer_elsewhere(self, room_id: RoomID) -> str | None:
        """The writer of ``room_id`` when it is not this process (None: done here)."""
        writer = self._owners.owner(room_id)
        return None if writer == self._instance else writer

    async def forward(
        self, writer: str, op: str, room_id: RoomID, user_id: UserID, **fields: Any
    ) -> None:
        body: JsonDict = {"op": op, "room_id": room_id, "user_id": user_id, **fields}
        answer = await self._writes.post(writer, MEMBERSHIP_PATH, body, within=SLOW_SECONDS)
        # Read-your-writes: what the writer stored is announced here before answering.
        position = answer.get("position")
        if isinstance(position, int) and not isinstance(position, bool):
            await self._writes.seen(position)


def not_here(room_id: RoomID) -> MatrixError:
    """A forwarded membership for a room this writer no longer writes (taken over)."""
    return unavailable(f"{room_id} is written elsewhere now; try again")


def servers_field(value: object) -> list[ServerName]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise MatrixError(Errcode.BAD_JSON, "'servers' must be a list of strings")
    return [ServerName(s) for s in value]
