"""A bounded least-recently-used map: the one cache shape services use for hot data.

The entries live in a plain ``dict``, whose order is insertion order: a use moves its key
to the end by inserting it again, so the least recently used key comes first. That
costs half the memory of an ``OrderedDict`` per entry (which adds a linked list; issue
15, peak memory). A dict finds its first key by skipping the slots its deleted keys
left at its start until it next compacts, so eviction drops the oldest sixteenth of the
entries at once: one such walk per sixteenth of the puts, not one per put.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

# Evicted together when a put goes over the size: this share of it.
_EVICTED_SHARE = 16


class LRU(Generic[K, V]):
    """Holds at most ``size`` entries; values are never None (None means absent)."""

    __slots__ = ("_data", "_evicted", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._evicted = max(1, size // _EVICTED_SHARE)
        self._data: dict[K, V] = {}

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._data))

    def get(self, key: K) -> V | None:
        data = self._data
        if key not in data:
            return None
        value = data.pop(key)
        data[key] = value
        return value

    def peek(self, key: K) -> V | None:
        """The value of ``key``, leaving it where it is in the eviction order."""
        return self._data.get(key)

    def oldest(self) -> tuple[K, V] | None:
        """The entry that would be evicted next (the least recently used or put)."""
        return next(iter(self._data.items()), None)

    def put(self, key: K, value: V) -> None:
        data = self._data
        data.pop(key, None)
        data[key] = value
        if len(data) > self._size:
            for oldest in list(islice(data, self._evicted)):
                del data[oldest]

    def pop(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        """Drop every entry."""
        self._data.clear()
