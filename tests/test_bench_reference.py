"""The reference figures the benchmark prints beside the Zipf hit ratio: the
share an ideal cache would get, and what a cache that counted every request
exactly would get on the same draws. Both are computed, so both are tested."""

from __future__ import annotations

import pytest

from movieservice.bench.zipf import frequency_policy_hit_ratio, zipf_draws, zipf_share


def test_zipf_share_of_the_most_popular():
    # Weights 1, 1/2, 1/3, 1/4: the first two are 1.5 of 25/12.
    assert zipf_share(2, 4) == pytest.approx(1.5 / (25 / 12))
    assert zipf_share(4, 4) == pytest.approx(1.0)


def test_a_cache_with_room_for_every_id_misses_only_first_requests():
    assert frequency_policy_hit_ratio(["a", "b"], ["a", "b", "c", "c"], capacity=3) == 0.75


def test_an_id_requested_once_does_not_displace_a_more_requested_one():
    # "a" is cached and requested twice before; "b" (once before, once now)
    # is not admitted, so "a" still hits after it.
    assert frequency_policy_hit_ratio(["a", "a", "b"], ["b", "a"], capacity=1) == 0.5


def test_an_id_requested_more_often_replaces_the_least_requested():
    # "b" overtakes "a" (2 requests) on its third and is cached; its fourth hits.
    assert frequency_policy_hit_ratio(["a", "a", "b", "b"], ["b", "b", "a"], capacity=1) == pytest.approx(1 / 3)


def test_on_zipf_draws_it_stays_below_the_ideal():
    ids = [str(i) for i in range(500)]
    history, measured = zipf_draws(ids, 20_000, seed=1), zipf_draws(ids, 5_000, seed=2)
    learned = frequency_policy_hit_ratio(history, measured, capacity=250)
    ideal_on_these_draws = sum(1 for i in measured if int(i) < 250) / len(measured)
    assert 0.9 * ideal_on_these_draws < learned <= ideal_on_these_draws
