"""One object for equal values, held weakly: what many holders keep equal copies of
(sliding-sync connections' sent rooms, requests' ``required_state``) costs memory once,
and equal values compare by identity."""

from __future__ import annotations

import weakref
from typing import Generic, TypeVar

_T = TypeVar("_T")


class Interned(Generic[_T]):
    """Values by a hash of theirs; a value goes with the last holder of it."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: weakref.WeakValueDictionary[int, _T] = weakref.WeakValueDictionary()

    def __len__(self) -> int:
        return len(self._held)

    def one(self, value: _T, key: int) -> _T:
        """The held value equal to ``value`` (``key``: its hash), else ``value``, now
        held. Equal keys of unequal values: ``value`` is returned, unshared."""
        held = self._held.get(key)
        if held is None:
            self._held[key] = value
            return value
        return held if held == value else value
