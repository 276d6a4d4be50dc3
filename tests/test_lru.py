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
