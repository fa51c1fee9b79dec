"""Counting a spike once across filters (engine/pipeline/coincidences.py)."""

import numpy as np

from engine.pipeline.coincidences import resolve_coincidences
from engine.pipeline.inference import SpikeEvents


def events(rows):
    rows = sorted(rows)
    times, filters, amplitudes = zip(*rows)
    return SpikeEvents(np.array(times, np.int64), np.array(filters, np.int32), np.array(amplitudes, np.float32))


def test_a_small_filters_event_under_a_far_bigger_neighbours_spike_is_its_residual():
    # Filter 1 codes its own spikes at ~10 and, as often, what a big spike of filter 0 leaves (also ~10:
    # its median cannot tell them apart). Filter 2 is as small but on other channels.
    own = [(1000 + 400 * i, 1, 10.0) for i in range(5)]
    far = [(1001 + 400 * i, 2, 10.0) for i in range(5, 10)]
    big = [(3000 + 400 * i, 0, 100.0) for i in range(5, 10)]
    beside_big = [(3002 + 400 * i, 1, 10.0) for i in range(5, 10)]
    far_beside_big = [(3003 + 400 * i, 2, 10.0) for i in range(5, 10)]
    pooled = events(own + far + big + beside_big + far_beside_big)
    sharing = np.array([[True, True, False], [True, True, False], [False, False, True]])

    before = resolve_coincidences(pooled, window=5)
    assert np.sum(before.filters == 1) == 10  # the median rule alone keeps the residuals

    after = resolve_coincidences(pooled, window=5, sharing=sharing)
    kept_1 = after.times[after.filters == 1]
    assert set(kept_1) == {t for t, _, _ in own}  # its own spikes stay, the residuals go
    assert np.sum(after.filters == 2) == 10  # no shared channel: a coincidence, not a residual
    assert np.sum(after.filters == 0) == 5


def test_two_neighbours_of_comparable_size_firing_together_both_stay():
    pair = events([(500, 0, 40.0), (502, 1, 30.0), (900, 0, 40.0), (1300, 1, 30.0)])
    after = resolve_coincidences(pair, window=5, sharing=np.ones((2, 2), bool))
    assert len(after) == 4
