"""Received PDUs handed to their room's event writer (issue 21, "a room's events are
created by one writer at a time").

A process taking in other servers' transactions (``federation_inbound``) stores only the
PDUs of rooms it writes; it posts the others, grouped by writer (``RoomOwners``), to the
writer's internal API (``POST /_peyvand/internal/v1/federation/pdus``: ``{"origin",
"pdus"}``, answered with ``{"pdus": {event_id: result}}`` by that writer's own
``FederationEventHandler.receive_pdus``), which runs every check and stores them. A
writer that cannot answer (down, or no longer writing the room) fails the whole
transaction with a 503: it is not remembered as answered, and the origin sends it again
(what was stored meanwhile is then a duplicate, answered as accepted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

from peyvand.errors import Errcode, MatrixError
from peyvand.services.timeline.forwarding import ForwardedWrites
from peyvand.services.timeline.room_owners import RoomOwners
from peyvand.types import JsonDict, RoomID, ServerName

logger = logging.getLogger(__name__)

PDUS_PATH: Final = "/_peyvand/internal/v1/federation/pdus"
# How long the writer may take (fetching missing events and state from other servers):
# longer, and the origin's request times out anyway (it sends the transaction again).
PDUS_SECONDS: Final = 90.0


def unavailable(reason: str) -> MatrixError:
    """The transaction cannot be taken in now: the origin retries it."""
    return MatrixError(Errcode.UNKNOWN, reason, status=503)


class ForwardedPdus:
    """Which writer stores a room's received PDUs, and the posting to the others."""

    def __init__(self, writes: ForwardedWrites, owners: RoomOwners, instance: str) -> None:
        self._writes = writes
        self._owners = owners
        self._instance = instance

    def writes_here(self, room_id: RoomID) -> bool:
        return self._owners.owner(room_id) == self._instance

    def split(
        self, raw_pdus: Sequence[Any], *, forwarded: bool
    ) -> tuple[list[Any], dict[str, list[Any]]]:
        """The PDUs stored here (and the malformed, dropped here) and those of each other
        writer's rooms. ``forwarded``: they were handed here by another process, which
        thought this one writes their rooms; 503 if it no longer does (taken over)."""
        here: list[Any] = []
        elsewhere: dict[str, list[Any]] = {}
        for raw in raw_pdus:
            room_id = raw.get("room_id") if isinstance(raw, dict) else None
            writer = None if not isinstance(room_id, str) else self._owners.owner(RoomID(room_id))
            if writer is None or writer == self._instance:
                here.append(raw)
            elif forwarded:
                raise unavailable(f"{room_id} is written by {writer} now")
            else:
                elsewhere.setdefault(writer, []).append(raw)
        return here, elsewhere

    async def forward(
        self, origin: ServerName, by_writer: Mapping[str, Sequence[Any]]
    ) -> dict[str, Any]:
        """Each writer's results for its PDUs, merged; 503 if any writer failed."""

        async def post(writer: str, pdus: Sequence[Any]) -> dict[str, Any]:
            try:
                answer = await self._writes.post(
                    writer, PDUS_PATH, {"origin": origin, "pdus": list(pdus)}, within=PDUS_SECONDS
                )
            except MatrixError as exc:
                logger.info("PDUs from %s not taken in by %s: %s", origin, writer, exc)
                raise unavailable(f"the event writer {writer} did not take them in") from None
            results = answer.get("pdus")
            if not isinstance(results, dict):
                raise unavailable(f"the event writer {writer} answered without results")
            return results

        merged: dict[str, Any] = {}
        for results in await asyncio.gather(*(post(w, p) for w, p in by_writer.items())):
            merged.update(results)
        return merged


def forwarded_body(body: JsonDict) -> tuple[ServerName, list[Any]]:
    """The origin and PDUs of a forwarded batch; 400 when malformed."""
    origin, pdus = body.get("origin"), body.get("pdus")
    if not isinstance(origin, str) or not isinstance(pdus, list):
        raise MatrixError(Errcode.BAD_JSON, "'origin' must be a string and 'pdus' a list")
    return ServerName(origin), pdus
