"""Counting a spike once across filters (engine/pipeline/coincidences.py)."""

import numpy as np

from engine.pipeline.coincidences import (coincidence_drops, coincidence_survivors, find_coincidences,
                                          join_split_shares, resolve_coincidences)
from engine.pipeline.inference import SpikeEvents


def events(rows):
    rows = sorted(rows)
    times, filters, amplitudes = zip(*rows)
    return SpikeEvents(np.array(times, np.int64), np.array(filters, np.int32), np.array(amplitudes, np.float32))


def test_residuals_beside_bigger_neighbours_go_even_where_they_outnumber_the_filters_own_spikes():
    # Filter 1 codes its own spikes at ~10 and, twice as often, what a big spike of filter 0 leaves
    # (~5): a median over all its events (5) would call the residuals usual and keep them.
    own = [(1000 + 400 * i, 1, 10.0 + 0.1 * i) for i in range(5)]
    big = [(3000 + 400 * i, 0, 100.0) for i in range(10)]
    residuals = [(3002 + 400 * i, 1, 5.0) for i in range(10)]
    pooled = events(own + big + residuals)
    sharing = np.ones((2, 2), bool)

    after = resolve_coincidences(pooled, window=5, sharing=sharing)

    assert set(after.times[after.filters == 1]) == {t for t, _, _ in own}
    assert np.sum(after.filters == 0) == 10
    # Pruning's reading (the median of all its events) keeps them: it counts the filter's events.
    as_pruning_reads = resolve_coincidences(pooled, window=5, usual_of_lone_events=False, residual_fraction=0.0)
    assert np.sum(as_pruning_reads.filters == 1) == 15


def test_a_small_units_real_spike_on_a_far_bigger_neighbours_stays():
    # Filter 1's unit fires at its usual size (~10) on top of a 10x bigger neighbour's spike: a
    # real coincidence (the earlier 15 % bar took it for that spike's residual).
    own = [(1000 + 400 * i, 1, 10.0 + 0.1 * i) for i in range(6)]
    big = [(5000 + 400 * i, 0, 100.0) for i in range(3)]
    on_big = [(5002 + 400 * i, 1, 9.8) for i in range(3)]
    after = resolve_coincidences(events(own + big + on_big), window=5, sharing=np.ones((2, 2), bool))
    assert np.sum(after.filters == 1) == 9
    # ... but at its usual size beside a 40x bigger spike it is that spike's residual.
    huge = events(own + [(5000, 0, 400.0), (5002, 1, 9.8)])
    assert np.sum(resolve_coincidences(huge, window=5, sharing=np.ones((2, 2), bool)).filters == 1) == 6


def test_a_big_neurons_spike_read_short_beside_a_bigger_one_stays_when_over_the_own_spike_bar():
    # Filter 1's neuron is big (~60 alone); beside a bigger spike its amplitude reads 38 (0.63 of it).
    own = [(1000 + 400 * i, 1, 60.0 + 0.1 * i) for i in range(6)]
    big = [(5000 + 400 * i, 0, 170.0) for i in range(3)]
    short = [(5004 + 400 * i, 1, 38.0) for i in range(3)]
    # Filter 2 is small (~16): what bigger spikes leave on it (9, over 5 % of them) is under its bar.
    small = [(1200 + 400 * i, 2, 16.0) for i in range(6)]
    residuals = [(5002 + 400 * i, 2, 9.0) for i in range(3)]
    pooled, sharing = events(own + big + short + small + residuals), np.ones((3, 3), bool)
    bars = np.full(3, 4 * 5.0)  # 4 λ, λ = 5

    assert np.sum(resolve_coincidences(pooled, window=5, sharing=sharing).filters == 1) == 6
    after = resolve_coincidences(pooled, window=5, sharing=sharing, own_spike_bar=bars)
    assert np.sum(after.filters == 1) == 9
    assert np.sum(after.filters == 2) == 6  # the residuals still go
    # Over the bar but a sliver of a far bigger spike (under RESIDUAL_FRACTION of it): a residual still.
    huge = events(own + [(5000, 0, 1000.0), (5004, 1, 38.0)])
    assert np.sum(resolve_coincidences(huge, window=5, sharing=np.ones((2, 2), bool),
                                       own_spike_bar=bars[:2]).filters == 1) == 6


def test_filters_without_a_shared_channel_do_not_take_each_others_events():
    # Filter 2 is on other channels: its weak event beside filter 0's spike is a coincidence.
    own_2 = [(1000 + 400 * i, 2, 10.0) for i in range(5)]
    big = [(5000, 0, 100.0), (5400, 0, 100.0)]
    weak_2 = [(5001, 2, 4.0)]
    sharing = np.array([[True, True, False], [True, True, False], [False, False, True]])
    pooled = events(own_2 + big + weak_2)
    assert np.sum(resolve_coincidences(pooled, window=5, sharing=sharing).filters == 2) == 6
    # ... where a shared channel would have made it a residual.
    assert np.sum(resolve_coincidences(pooled, window=5).filters == 2) == 5


def test_two_neighbours_of_comparable_size_firing_together_both_stay():
    pair = events([(500, 0, 40.0), (502, 1, 30.0), (900, 0, 40.0), (1300, 1, 30.0)])
    after = resolve_coincidences(pair, window=5, sharing=np.ones((2, 2), bool))
    assert len(after) == 4


def test_the_smaller_of_two_neurons_on_one_filter_keeps_its_spikes_that_overlap_another_neuron():
    # Filter 1 codes two neurons of its shape, at ~155 and ~400 (the amplitude split makes them two units).
    # The smaller one's spikes 10 samples from a bigger spike of filter 0 are its own: against the median
    # of both sizes (~280) they looked like residuals.
    rng = np.random.default_rng(0)
    small = [(10_000 + 500 * i, 1, float(rng.normal(155, 4))) for i in range(200)]
    large = [(200_000 + 500 * i, 1, float(rng.normal(400, 8))) for i in range(200)]
    neighbour = [(400_000 + 500 * i, 0, 170.0) for i in range(30)]
    overlapping = [(400_010 + 500 * i, 1, 150.0) for i in range(30)]
    pooled = events(small + large + neighbour + overlapping)
    sharing = np.ones((2, 2), bool)

    kept = resolve_coincidences(pooled, window=15, sharing=sharing, same_spike=3)
    assert np.sum(kept.filters == 1) == 430
    # Without telling a spike of its own from a part of the same spike, they go.
    assert np.sum(resolve_coincidences(pooled, window=15, sharing=sharing).filters == 1) == 400
    # One sample from the bigger spike, the same size is a share of that spike, judged as before.
    shares = [(400_001 + 500 * i, 1, 150.0) for i in range(30)]
    kept = resolve_coincidences(events(small + large + neighbour + shares), window=15, sharing=sharing, same_spike=3)
    assert np.sum(kept.filters == 1) == 400


def _two_look_alike_neurons(extra):
    """Filter 0's neuron at ~18, filter 1's at ~12, each firing alone 100 times, plus `extra` events."""
    alone = [(1_000 + 400 * i, 0, 18.0 + 0.01 * i) for i in range(100)]
    alone += [(100_000 + 400 * i, 1, 12.0 + 0.01 * i) for i in range(100)]
    return events(alone + extra)


def _joined(pooled, alike_01: float):
    alike = np.array([[1.0, alike_01], [alike_01, 1.0]])
    return join_split_shares(pooled, find_coincidences(pooled, window=15, sharing=np.ones((2, 2), bool)), same_spike=3,
                             alike=alike)


def test_one_spike_split_between_two_look_alike_filters_is_joined_into_the_bigger_share():
    # Filter 0's neuron coded as ~10 on its own filter plus ~9 on filter 1, one sample apart: together,
    # seen through their similarity, they are its usual ~18.
    pooled = _two_look_alike_neurons([(300_000 + 400 * i, 0, 10.0) for i in range(20)]
                                     + [(300_001 + 400 * i, 1, 9.0) for i in range(20)])
    amplitudes, joined = _joined(pooled, 0.85)
    shares = (pooled.times >= 300_000) & (pooled.filters == 1)
    holders = (pooled.times >= 300_000) & (pooled.filters == 0)
    assert joined[shares].all() and joined.sum() == 20
    np.testing.assert_allclose(amplitudes[holders], 10.0 + 0.85 * 9.0, rtol=1e-6)
    np.testing.assert_array_equal(amplitudes[~(shares | holders)], pooled.amplitudes[~(shares | holders)])


def test_look_alike_neurons_firing_at_once_stay_two_and_unlike_or_apart_shares_are_not_joined():
    # Each at its usual size: two neurons, not one spike in two shares.
    together = [(300_000 + 400 * i, 0, 18.0) for i in range(20)] + [(300_001 + 400 * i, 1, 12.0) for i in range(20)]
    amplitudes, joined = _joined(_two_look_alike_neurons(together), 0.85)
    assert not joined.any()
    # Shares of filters that are not alike, or farther apart than one spike.
    shares = [(300_000 + 400 * i, 0, 10.0) for i in range(20)] + [(300_001 + 400 * i, 1, 9.0) for i in range(20)]
    assert not _joined(_two_look_alike_neurons(shares), 0.5)[1].any()
    apart = [(300_000 + 400 * i, 0, 10.0) for i in range(20)] + [(300_008 + 400 * i, 1, 9.0) for i in range(20)]
    pooled = _two_look_alike_neurons(apart)
    amplitudes, joined = _joined(pooled, 0.85)
    assert not joined.any()
    np.testing.assert_array_equal(amplitudes, pooled.amplitudes)


def test_each_dropped_event_says_whether_it_went_as_short_or_as_a_bigger_ones_residue():
    # What the sort asks the recording again at its end (overlapped_spikes.py) is only the short ones:
    # an event under RESIDUAL_FRACTION of the bigger one is residue whatever the recording says.
    own = [(1000 + 400 * i, 1, 10.0) for i in range(8)]
    big = [(5000 + 400 * i, 0, 100.0) for i in range(4)]
    short = [(5003, 1, 6.0), (5403, 1, 5.5)]  # 0.6 and 0.55 of filter 1's usual 10, 6 % of the big one
    residue = [(5803, 1, 3.0)]  # 3 % of the big one: under RESIDUAL_FRACTION (and short too)
    pooled = events(own + big + short + residue)
    dropped_short, dropped_residue = coincidence_drops(pooled, window=5, sharing=np.ones((2, 2), bool))
    time_of = {int(t): i for i, t in enumerate(pooled.times)}
    assert [bool(dropped_short[time_of[t]]) for t, _, _ in short + residue] == [True, True, True]
    assert [bool(dropped_residue[time_of[t]]) for t, _, _ in short + residue] == [False, False, True]
    assert not dropped_short[[time_of[t] for t, _, _ in own + big]].any()
    assert not dropped_residue[[time_of[t] for t, _, _ in own + big]].any()
    survivors = coincidence_survivors(pooled, window=5, sharing=np.ones((2, 2), bool))
    assert np.array_equal(survivors, ~(dropped_short | dropped_residue))
