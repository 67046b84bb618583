"""The Zipf rows: Get hit ratios under a skewed workload with Redis' memory
bounded, beside two computed references (the functions below, tested in
tests/test_bench_reference.py).

Zipf(1.0) over 5,000 movies: even a cache that always held the most popular
ones would need room for ~64% of them to answer 95% of the Gets, and a cache
has to learn which those are from the requests themselves. Redis gets memory
for 80%, then 70%, of them (larger first: lowering maxmemory evicts at once).
"""

from __future__ import annotations

import bisect
import heapq
import math
import random

import grpc
import redis

from movieservice.bench.latency import get_each
from movieservice.bench.session import (
    ZIPF_DATABASE,
    ZIPF_MOVIES,
    ZIPF_REDIS_OPTIONS,
    Bench,
    answered,
    movie_service,
)
from movieservice.bench.stats import grown
from movieservice.devstack.metrics import Samples
from movieservice.proto.movies.v1 import movies_pb2

ZIPF_CACHE_SHARES = (0.8, 0.7)
SERVICE_NAME = "zipf"


def zipf(bench: Bench, command: str) -> None:
    service = bench.serve(SERVICE_NAME, MONGO_DB=ZIPF_DATABASE, NEAR_CACHE_SIZE="0",
                          REDIS_URL=bench.redis_url(bench.bounded_redis))  # fmt: skip
    count = 10_000 if bench.quick else 20_000
    client = redis.Redis(port=bench.bounded_redis.port)
    ids = bench.zipf_ids

    with grpc.insecure_channel(service.target) as channel:  # the indexes are built before the baseline
        stub = movie_service(channel)
        answered(lambda: stub.TopRated(movies_pb2.TopRatedRequest(), timeout=120))
        answered(
            lambda: stub.Nearby(movies_pb2.NearbyRequest(latitude=40.7, longitude=-74.0, radius_km=10), timeout=120)
        )
    baseline = used_memory(client)
    # Warm up unbounded and measure what a movie costs; then, for each share,
    # give Redis room for that share of the collection, settle under the bound
    # and measure. Every phase has its own draws: replaying a warm-up's
    # sequence would measure only what the warm-up loaded.
    history = zipf_draws(ids, 2 * count, seed=1)
    get_each(bench, service, history)
    per_movie = (used_memory(client) - baseline) / movie_keys(client)
    for phase, share in enumerate(ZIPF_CACHE_SHARES):
        settle = zipf_draws(ids, 2 * count, seed=3 + 2 * phase)
        measured = zipf_draws(ids, count, seed=2 + 2 * phase)
        limit = int(baseline + share * len(ids) * per_movie)
        client.config_set("maxmemory", limit)
        get_each(bench, service, settle)
        before = service.metrics()
        report = get_each(bench, service, measured)
        after = service.metrics()

        def lookups(result: str, after: Samples = after, before: Samples = before) -> float:
            return grown(after, before, "movieservice_cache_lookups_total", cache="movie", result=result)

        hits = lookups("hit") + lookups("negative_hit")
        total = hits + lookups("miss") + lookups("error")
        cached = movie_keys(client)
        ideal = zipf_share(cached, len(ids))
        learned = frequency_policy_hit_ratio(history + settle, measured, cached)
        history += settle + measured
        bench.row(f"Zipf(s=1.0) over all {ZIPF_MOVIES:,} movies, Redis memory for {share:.0%} of them",
                  "hit ratio >= 0.95", f"hit ratio {hits / total:.3f}, p99 {report.percentile_ms(99):.1f} ms",
                  f"{count:,} Gets after {len(history) - count:,} earlier ones ({len(settle):,} under this bound); "
                  f"{report.rps:.0f} rps; {lookups('miss'):.0f} misses; maxmemory {limit / 2**20:.1f} MiB "
                  f"({per_movie:.0f} B per cached movie) held {cached:,} movies at the end; holding exactly the "
                  f"{cached:,} most popular would give {ideal:.3f}; a cache of {cached:,} that knew how often "
                  f"every id had been drawn before (exact-count LFU with admission) {learned:.3f} on these draws",
                  f"{command}: ghz -c16, " + ", ".join(f"{k} {v}" for k, v in ZIPF_REDIS_OPTIONS.items())
                  + ", NEAR_CACHE_SIZE=0")  # fmt: skip
    client.close()


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def movie_keys(client: redis.Redis) -> int:
    return sum(1 for _ in client.scan_iter(f"{SERVICE_NAME}:movie:*", count=1000))


def zipf_draws(items: list[str], count: int, seed: int, s: float = 1.0) -> list[str]:
    """`count` draws from `items`, the i-th (from 1) weighted 1/i^s."""
    rng = random.Random(seed)
    cumulative, total = [], 0.0
    for rank in range(1, len(items) + 1):
        total += 1 / math.pow(rank, s)
        cumulative.append(total)
    return [items[bisect.bisect_left(cumulative, rng.random() * total)] for _ in range(count)]


def zipf_share(top: int, n: int, s: float = 1.0) -> float:
    """The share of Zipf(s) draws over n items that fall on the `top` most popular."""
    weights = [1 / math.pow(rank, s) for rank in range(1, n + 1)]
    return sum(weights[:top]) / sum(weights)


def frequency_policy_hit_ratio(history: list[str], measured: list[str], capacity: int) -> float:
    """The hit ratio over `measured` (after `history`) of a cache of `capacity`
    ids that counts every request exactly, evicts the least requested id and
    admits a missed id only when it has been requested more often than that
    one (LFU with TinyLFU's admission, without its approximations): about the
    best a policy that learns popularity from the requests can do."""
    counts: dict[str, int] = {}
    cached: set[str] = set()
    by_count: list[tuple[int, str]] = []  # a heap of (count, id), stale entries skipped
    hits = 0
    for position, key in enumerate(history + measured):
        counts[key] = counts.get(key, 0) + 1
        if key in cached:
            hits += position >= len(history)
            heapq.heappush(by_count, (counts[key], key))
            continue
        if len(cached) >= capacity:
            while by_count[0][1] not in cached or by_count[0][0] != counts[by_count[0][1]]:
                heapq.heappop(by_count)
            if counts[key] <= by_count[0][0]:
                continue
            cached.discard(heapq.heappop(by_count)[1])
        cached.add(key)
        heapq.heappush(by_count, (counts[key], key))
    return hits / len(measured)
