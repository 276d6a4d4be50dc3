"""``peyvand.lru``: the bounded least-recently-used map every cache uses."""

from __future__ import annotations

from peyvand.lru import LRU


def test_get_refreshes_and_the_least_recently_used_goes_first() -> None:
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert cache.get("b") is None
    assert list(cache) == ["a", "c"]


def test_peek_leaves_the_eviction_order_alone() -> None:
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.peek("a") == 1
    assert cache.oldest() == ("a", 1)
    cache.put("c", 3)
    assert cache.peek("a") is None
    assert list(cache) == ["b", "c"]


def test_oldest_and_pop() -> None:
    cache: LRU[str, int] = LRU(3)
    assert cache.oldest() is None
    cache.put("a", 1)
    cache.put("b", 2)
    cache.pop("a")
    cache.pop("missing")
    assert cache.oldest() == ("b", 2)
    assert len(cache) == 1


def test_going_over_the_size_evicts_the_oldest_sixteenth_at_once() -> None:
    cache: LRU[int, int] = LRU(32)
    for key in range(32):
        cache.put(key, key)
    assert cache.get(0) == 0  # now the most recently used
    cache.put(32, 32)
    assert len(cache) == 31
    assert list(cache) == [*range(3, 32), 0, 32]


def test_it_never_holds_more_than_its_size_through_churn() -> None:
    cache: LRU[int, int] = LRU(100)
    for key in range(10_000):
        cache.put(key, key)
        cache.get(key // 2)
        assert len(cache) <= 100
    assert cache.peek(9_999) == 9_999


def test_clear_drops_every_entry_and_keeps_the_size() -> None:
    cache: LRU[int, int] = LRU(10)
    for key in range(10):
        cache.put(key, key)
    cache.clear()
    assert len(cache) == 0 and cache.get(3) is None
    for key in range(20):
        cache.put(key, key)
    assert len(cache) <= 10
