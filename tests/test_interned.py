"""Interned: one object for equal values, held weakly."""

from __future__ import annotations

import gc

from peyvand.interned import Interned


def test_equal_values_are_one_object() -> None:
    interned: Interned[frozenset[str]] = Interned()
    first = frozenset({"a", "b"})
    second = frozenset({"b", "a"})
    assert interned.one(first, hash(first)) is first
    assert interned.one(second, hash(second)) is first
    assert len(interned) == 1


def test_an_unequal_value_under_a_held_key_is_returned_unshared() -> None:
    interned: Interned[frozenset[str]] = Interned()
    held = frozenset({"a"})
    other = frozenset({"b"})
    interned.one(held, 7)
    assert interned.one(other, 7) is other
    assert interned.one(frozenset({"a"}), 7) is held


def test_values_go_with_their_last_holder() -> None:
    interned: Interned[frozenset[str]] = Interned()
    value = frozenset({"a"})
    interned.one(value, hash(value))
    del value
    gc.collect()
    assert len(interned) == 0
