"""Stand-ins for the collaborators of the services under unit test (``tests/services``):
a room whose members are listed, a notifier that records every wake-up, and the HTTP
connection a long-poll came on."""

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


class FakeConnection:
    """Stands for the HTTP connection a long-poll's request came on (the notifier's
    ``ClientConnection``): ``lose()`` ends its waiting polls as the server's
    ``connection_lost`` does; ``checks`` counts the ``gone`` checks."""

    def __init__(self) -> None:
        self.lost = False
        self.polls: list[asyncio.Future[bool]] = []
        self.checks = 0

    def gone(self) -> bool:
        self.checks += 1
        return self.lost

    def watch(self, future: asyncio.Future[bool]) -> bool:
        if self.lost:
            return False
        self.polls.append(future)
        return True

    def unwatch(self, future: asyncio.Future[bool]) -> None:
        if future in self.polls:
            self.polls.remove(future)

    def lose(self) -> None:
        self.lost = True
        polls, self.polls = self.polls, []
        for future in polls:
            if not future.done():
                future.set_result(True)
