"""Which event writer of a deployment creates each room's events (issue 21, several event
writers): one writer per room, so a room's events stay serial, each built on the
writer's own view of the room's state and forward extremities.

A room belongs to the writer chosen by the first character of its ID's opaque part (the
character after ``!``): its code point modulo the number of writers. Room IDs are random
or hashes (``!`` followed by a base64 event hash in room version 12), so the character is
spread evenly; and a reverse proxy can compute it with a regular expression alone
(``shard_characters``, in ``peyvand deployment nginx``'s maps), so nginx sends a room's
sends straight to its writer. A room
whose ID starts otherwise (no character after ``!``, or one outside printable ASCII)
belongs to the first writer.
"""

from __future__ import annotations

from collections.abc import Mapping

from peyvand.storage.room_writers import Holding
from peyvand.types import RoomID

# The characters a room ID's opaque part starts with, as far as shards are computed.
_FIRST = range(0x21, 0x7F)


def shard_of(room_id: str, count: int) -> int:
    """The index of the writer of ``room_id`` among ``count`` writers."""
    first = ord(room_id[1]) if len(room_id) > 1 else 0
    return first % count if first in _FIRST else 0


def shard_characters(index: int, count: int) -> str:
    """Every character that puts a room in shard ``index`` of ``count``."""
    return "".join(chr(c) for c in _FIRST if c % count == index)


class RoomOwners:
    """The deployment's event writers, in configured order, and which of them creates
    each one's rooms now (``holders``, from ``storage.room_writers``: the writer itself,
    or another that took its rooms over while it was down)."""

    def __init__(self, writers: tuple[str, ...]) -> None:
        self.writers = writers
        self._holders: dict[str, Holding] = {}

    def shard(self, room_id: RoomID) -> str:
        """The writer whose rooms ``room_id`` is one of."""
        return self.writers[shard_of(room_id, len(self.writers))]

    def owner(self, room_id: RoomID) -> str:
        """The writer that creates ``room_id``'s events now."""
        return self.holder(self.shard(room_id))

    def holder(self, writer: str) -> str:
        """The writer that creates ``writer``'s rooms' events now."""
        return self.holding(writer).holder

    def holding(self, writer: str) -> Holding:
        return self._holders.get(writer) or Holding(writer, 0)

    def room_holding(self, room_id: RoomID) -> Holding:
        """Who creates ``room_id``'s events now, and how many times that changed."""
        return self.holding(self.shard(room_id))

    def update(self, holders: Mapping[str, Holding]) -> None:
        """The stored holdings (a writer without one holds its own rooms)."""
        self._holders = {w: h for w, h in holders.items() if w in self.writers}
