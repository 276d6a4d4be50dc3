"""Received EDUs of the primary writer's streams handed to it (issue 21).

Read receipts and to-device messages are stored in streams whose positions one process
allocates at a time, the primary event writer (``wiring.primary``). A process taking in
other servers' transactions that is not the primary posts those EDUs to the writers in
order (``POST /_peyvand/internal/v1/federation/edus``: ``{"origin", "edus"}``, answered
``{}`` by the one that is the primary, 503 by the others); when none takes them, the
whole transaction is answered 503 and the origin sends it again (receipts are kept per
user, to-device messages by their ``message_id``: taking one in twice changes nothing).
The primary first announces every event stored so far, so a receipt of a user whose join
came in the same transaction, stored by another writer, finds them joined.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

from peyvand.errors import MatrixError
from peyvand.services.federation.forwarded_pdus import unavailable
from peyvand.services.timeline.forwarding import ForwardedWrites
from peyvand.types import ServerName

logger = logging.getLogger(__name__)

EDUS_PATH: Final = "/_peyvand/internal/v1/federation/edus"
# How long the primary waits, at most, to announce what the other writers stored before
# it applies forwarded EDUs.
CATCH_UP_SECONDS: Final = 5.0
# The EDU types stored in the primary's streams.
PRIMARY_EDU_TYPES: Final = frozenset({"m.receipt", "m.direct_to_device"})


class PrimaryEdus:
    def __init__(
        self, writes: ForwardedWrites, writers: Sequence[str], here: Callable[[], bool]
    ) -> None:
        """``here``: whether this process is the primary now."""
        self._writes = writes
        self._writers = writers
        self.here = here

    @staticmethod
    def split(edus: Sequence[Any]) -> tuple[list[Any], list[Any]]:
        """The EDUs applied anywhere, and those of the primary's streams."""
        anywhere: list[Any] = []
        primary: list[Any] = []
        for edu in edus:
            kind = edu.get("edu_type") if isinstance(edu, dict) else None
            (primary if kind in PRIMARY_EDU_TYPES else anywhere).append(edu)
        return anywhere, primary

    async def forward(self, origin: ServerName, edus: Sequence[Any]) -> None:
        """Hand ``edus`` to the primary; 503 when no writer takes them."""
        body = {"origin": origin, "edus": list(edus)}
        for writer in self._writers:
            try:
                await self._writes.post(writer, EDUS_PATH, body)
            except MatrixError as exc:
                logger.debug("EDUs from %s not taken by %s: %s", origin, writer, exc)
                continue
            return
        raise unavailable("No primary event writer took the EDUs")
