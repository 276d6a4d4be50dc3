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

from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class RoomOwners:
    """The deployment's event writers, in configured order."""

    writers: tuple[str, ...]

    def owner(self, room_id: RoomID) -> str:
        return self.writers[shard_of(room_id, len(self.writers))]
