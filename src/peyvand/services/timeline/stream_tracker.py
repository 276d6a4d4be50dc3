"""Which allocated stream positions are durable (issue 21, "Stream positions").

Positions are handed out in order, but the writes they number finish out of order: an
event waits in the group commit while a remote invite, stored in its own transaction,
commits at a higher position. A reader told of the higher position first would take it
as the bound of its next read (a /sync ``next_batch``) and skip the lower one for good.

So every allocated position is tracked until its write finishes, committed or abandoned
(a failed commit, a request that gave up before enqueueing); ``persisted_upto`` is the
highest position at and below which nothing is in flight. What finishing a position
announces (a ``wake``: the users to tell) is held until every lower position has
finished, then released in position order, so a wake may tell readers of its own
position. (Not of ``persisted_upto``: an abandoned position it counts is stored nowhere,
and is handed out again after a restart.) Synapse's
``MultiWriterIdGenerator`` keeps the same bound (``get_current_token``) for one writer.

With several event writers (a deployment's ``event_writer`` processes), each allocates
in its own ``Lane``: the positions of one residue modulo the number of writers, so no
two writers ever hand out the same position and none needs to ask the others. A writer
also allocates above every position it has ``heard`` another writer announce, so the
writers' positions stay close together and a reader, which reads up to the lowest of
them, is not held back by one that writes less.

Pure and synchronous: the single-process hot path, one position allocated and finished
with nothing else in flight, is a few integer updates and no allocation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

W = TypeVar("W")


@dataclass(frozen=True, slots=True)
class Lane:
    """The positions one writer hands out: those equal to ``index`` modulo ``count``
    (the writer's place among the deployment's ``count`` event writers). The lone
    writer of a single process has them all."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"lane {self.index} of {self.count}")

    def owns(self, position: int) -> bool:
        return position % self.count == self.index

    def first_above(self, position: int) -> int:
        """The lowest position of the lane above ``position``."""
        return position + 1 + (self.index - position - 1) % self.count

    def first_below(self, position: int) -> int:
        """The highest position of the lane below ``position`` (backfilled history, which
        counts down)."""
        return position - 1 - (position - 1 - self.index) % self.count


SOLE_WRITER: Final = Lane()
"""The lane of a single process: every position."""


class StreamTracker(Generic[W]):
    """Positions of one stream, allocated by ``allocate`` and ended by ``finished``."""

    def __init__(self, last: int = 0, lane: Lane = SOLE_WRITER) -> None:
        """Continue after ``last``, the highest position already stored."""
        self._lane = lane
        # The highest position allocated (or ``last``), and the highest announced by
        # another writer: the next allocation is above both.
        self._top = last
        self._heard = last
        self._started_after = last
        # Allocated positions not yet finished, in allocation (so position) order.
        self._in_flight: deque[int] = deque()
        # Finished positions above the lowest one in flight, with the wake each holds
        # back (None: nothing to announce).
        self._finished: dict[int, W | None] = {}

    @property
    def lane(self) -> Lane:
        return self._lane

    def start_after(self, last: int) -> None:
        """Continue after ``last`` (read from storage at start-up, before any allocation)."""
        if self._in_flight:
            raise RuntimeError("positions are in flight")
        self._top = self._heard = self._started_after = last

    @property
    def started_after(self) -> int:
        """Where this run's positions began: it allocated none at or below it."""
        return self._started_after

    @property
    def heard_upto(self) -> int:
        """The highest position ``heard`` of the other writers (or stored at start)."""
        return self._heard

    @property
    def idle(self) -> bool:
        """Whether no allocated position is in flight."""
        return not self._in_flight

    def allocated_here(self, position: int) -> bool:
        """Whether ``position`` is one this run allocates (its lane, above its start)."""
        return position > self._started_after and self._lane.owns(position)

    def clear_below(self, position: int) -> bool:
        """Whether no allocated position at or below ``position`` is in flight."""
        return not self._in_flight or self._in_flight[0] > position

    @property
    def persisted_upto(self) -> int:
        """The highest position at and below which none of this writer's is in flight
        (and none will be allocated)."""
        if self._in_flight:
            return self._in_flight[0] - 1
        return max(self._top, self._heard)

    @property
    def in_flight(self) -> int:
        """How many allocated positions have not finished."""
        return len(self._in_flight) - len(self._finished)

    def heard(self, position: int) -> None:
        """Another writer announced ``position``: allocate above it from now on."""
        if position > self._heard:
            self._heard = position

    def allocate(self) -> int:
        """The next position; ``finished`` must be called for it exactly once."""
        top = self._top if self._top >= self._heard else self._heard
        position = top + 1 if self._lane.count == 1 else self._lane.first_above(top)
        self._top = position
        self._in_flight.append(position)
        return position

    def _allocated(self, position: int) -> bool:
        """Whether ``position`` is allocated and not yet finished or below the lowest in
        flight (one lane: every position in between is; several: a search)."""
        if self._lane.count == 1:
            return self._in_flight[0] < position <= self._top
        return position in self._in_flight

    def finished(self, position: int, wake: W | None = None) -> list[W]:
        """``position``'s write is over (committed, or abandoned: ``wake`` None). Returns
        the wakes now released, in position order: ``position``'s own and those held by
        higher finished positions, once no lower position is in flight; the caller
        announces them, each with the position that held it as the stream's."""
        in_flight = self._in_flight
        if not in_flight or position != in_flight[0]:
            if not in_flight or position in self._finished or not self._allocated(position):
                raise ValueError(f"position {position} is not in flight")
            self._finished[position] = wake
            return []
        in_flight.popleft()
        released = [] if wake is None else [wake]
        finished = self._finished
        while finished and in_flight and in_flight[0] in finished:
            held = finished.pop(in_flight.popleft())
            if held is not None:
                released.append(held)
        return released


EventPositions = StreamTracker[Callable[[], None]]
"""The events stream's tracker: each wake announces what its position committed (the
room index, /sync's notifier, the listeners), run by whoever finishes the position that
releases it."""
