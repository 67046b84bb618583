"""The near cache's bookkeeping (unit tests; the Redis side is tested live in test_near_cache_live.py)."""

from __future__ import annotations

from movieservice.cache.near import NearCache


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def near(size: int = 3, clock: Clock | None = None) -> NearCache:
    cache = NearCache(size, ttl_seconds=10, clock=clock or Clock())
    cache.enable()
    return cache


def test_a_read_that_raced_an_invalidation_is_not_stored():
    cache = near()
    before = cache.sequence
    cache.invalidate(["k"])  # a write landed while the read was in flight
    cache.put("k", "old", before)
    assert cache.get("k") is None
    after = cache.sequence
    cache.put("k", "new", after)
    assert cache.get("k") == "new"


def test_an_invalidation_before_the_read_does_not_block_it():
    cache = near()
    cache.invalidate(["k"])
    start = cache.sequence
    cache.put("k", "fresh", start)
    assert cache.get("k") == "fresh"


def test_invalidate_all_blocks_every_read_in_flight():
    cache = near()
    start = cache.sequence
    cache.put("a", 1, start)
    cache.invalidate(None)
    assert cache.get("a") is None
    cache.put("b", 2, start)
    assert cache.get("b") is None


def test_disabled_serves_nothing_and_forgets_everything():
    cache = near()
    cache.put("a", 1, cache.sequence)
    cache.disable()
    assert cache.get("a") is None and len(cache) == 0
    cache.put("a", 1, cache.sequence)
    assert cache.get("a") is None
    cache.enable()
    cache.put("a", 1, cache.sequence)
    assert cache.get("a") == 1


def test_bounded_lru_and_ttl():
    clock = Clock()
    cache = near(size=2, clock=clock)
    for key in "abc":
        cache.put(key, key, cache.sequence)
    assert cache.get("a") is None and cache.get("c") == "c"
    clock.now = 11
    assert cache.get("c") is None
