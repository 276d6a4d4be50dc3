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

Pure and synchronous: the single-process hot path, one position allocated and finished
with nothing else in flight, is two integer updates and no allocation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

W = TypeVar("W")


class StreamTracker(Generic[W]):
    """Positions of one stream, allocated by ``allocate`` and ended by ``finished``."""

    def __init__(self, last: int = 0) -> None:
        """Continue after ``last``, the highest position already stored."""
        self._next = last + 1
        self._persisted_upto = last
        # Finished positions above ``persisted_upto`` (a lower one is still in flight),
        # with the wake each holds back (None: nothing to announce).
        self._finished: dict[int, W | None] = {}

    def start_after(self, last: int) -> None:
        """Continue after ``last`` (read from storage at start-up, before any allocation)."""
        if self._next != self._persisted_upto + 1:
            raise RuntimeError("positions are in flight")
        self._next = last + 1
        self._persisted_upto = last

    @property
    def persisted_upto(self) -> int:
        """The highest position at and below which every write has finished."""
        return self._persisted_upto

    @property
    def in_flight(self) -> int:
        """How many allocated positions have not finished."""
        return self._next - 1 - self._persisted_upto - len(self._finished)

    def allocate(self) -> int:
        """The next position; ``finished`` must be called for it exactly once."""
        position = self._next
        self._next = position + 1
        return position

    def finished(self, position: int, wake: W | None = None) -> list[W]:
        """``position``'s write is over (committed, or abandoned: ``wake`` None). Returns
        the wakes now released, in position order: ``position``'s own and those held by
        higher finished positions, once no lower position is in flight; the caller
        announces them, each with the position that held it as the stream's."""
        if not self._persisted_upto < position < self._next or position in self._finished:
            raise ValueError(f"position {position} is not in flight")
        if position != self._persisted_upto + 1:
            self._finished[position] = wake
            return []
        released = [] if wake is None else [wake]
        finished = self._finished
        while finished and position + 1 in finished:
            position += 1
            held = finished.pop(position)
            if held is not None:
                released.append(held)
        self._persisted_upto = position
        return released


EventPositions = StreamTracker[Callable[[], None]]
"""The events stream's tracker: each wake announces what its position committed (the
room index, /sync's notifier, the listeners), run by whoever finishes the position that
releases it."""
