"""Stand-ins for the collaborators of the services under unit test (``tests/services``):
a room whose members are listed, and a notifier that records every wake-up."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from peyvand.services.sync.streams import Stream
from peyvand.types import UserID


@dataclass
class FakeRoom:
    """A room's ``joined_members`` (and ``joined_view``) from a membership per user."""

    memberships: dict[UserID, str]

    def joined_members(self) -> list[UserID]:
        return [u for u, m in self.memberships.items() if m == "join"]

    def joined_view(self) -> AbstractSet[UserID]:
        return frozenset(self.joined_members())


@dataclass
class RecordingNotifier:
    """A notifier recording each ``advance`` (stream, position, users woken); ``advanced``
    is set by the first."""

    woken: list[tuple[Stream, int, set[str]]] = field(default_factory=list)
    advanced: asyncio.Event = field(default_factory=asyncio.Event)

    def advance(
        self,
        stream: Stream,
        position: int,
        user_ids: Iterable[str],
        audiences: Sequence[AbstractSet[str]] = (),
    ) -> None:
        self.woken.append((stream, position, set(user_ids).union(*audiences)))
        self.advanced.set()
