"""A faint spike the lasso split between look-alike filters, each share under the bar, is one spike."""

import numpy as np

from engine.model.similarity import shift_invariant_similarity
from engine.pipeline.code_shares import CodeShares, pool_shares
from engine.pipeline.inference import kept_events

BAR = 4.5
N_TAPS = 30


def look_alike_filters() -> np.ndarray:
    """(3, 1, N_TAPS): two filters ~0.9 alike, and a third of another shape; unit norm."""
    taps = np.arange(N_TAPS)
    first = -np.exp(-0.5 * ((taps - 10) / 2.0) ** 2) + 0.3 * np.exp(-0.5 * ((taps - 16) / 3.0) ** 2)
    second = first + 0.35 * np.exp(-0.5 * ((taps - 7) / 2.0) ** 2)
    other = np.sin(taps / 3.0) * np.exp(-taps / 10.0)
    filters = np.stack([first, second, other])[:, None, :]
    return (filters / np.linalg.norm(filters, axis=(1, 2), keepdims=True)).astype(np.float32)


def test_the_biggest_share_passes_on_the_pool_and_the_smaller_one_does_not():
    alike = np.array([[0.0, 0.9], [0.9, 0.0]])
    biggest, pooled = pool_shares(np.array([100, 101]), np.array([0, 1]), np.array([3.0, 2.5]), alike, window=3)

    assert biggest.tolist() == [True, False]
    np.testing.assert_allclose(pooled, [3.0 + 0.9 * 2.5, 2.5 + 0.9 * 3.0])


def test_shares_pool_only_between_look_alikes_close_in_time():
    shares = CodeShares(np.array([[0.0, 0.9, 0.0], [0.9, 0.0, 0.0], [0.0, 0.0, 0.0]]), 3, np.zeros(3, np.int64))
    sums = np.array([3.0, 2.5])

    assert shares.passes(np.array([0, 1]), np.array([100, 101]), sums, BAR).tolist() == [True, False]
    assert shares.passes(np.array([0, 1]), np.array([100, 105]), sums, BAR).tolist() == [False, False]  # too far
    assert shares.passes(np.array([0, 2]), np.array([100, 101]), sums, BAR).tolist() == [False, False]  # unlike
    # A share that passes alone still does; the smaller one beside it gains nothing from it.
    assert shares.passes(np.array([0, 1]), np.array([100, 101]), np.array([6.0, 2.5]), BAR).tolist() == [True, False]


def test_a_faint_spike_coded_in_two_shares_is_kept_and_refitted_to_its_size():
    filters = look_alike_filters()
    likeness = shift_invariant_similarity(filters.transpose(0, 2, 1))
    assert 0.8 <= likeness[0, 1] < 0.99 and likeness[0, 2] < 0.8
    signal = np.zeros((1, 400), np.float32)
    signal[0, 100:100 + N_TAPS] = 7.0 * filters[0, 0]  # a spike of the first filter's shape, 7 σ
    codes = np.zeros((3, 400 - N_TAPS + 1), np.float32)
    codes[0, 100], codes[1, 100] = 3.0, 2.6  # the lasso's split: each share under the bar of 4.5

    none = kept_events(codes, signal, filters, dead_time=15, min_amplitude=BAR)
    shares = CodeShares.of(filters, sampling_rate=30_000.0, filter_peak_taps=np.zeros(3, np.int64))
    kept_filters, indices, triplets = kept_events(codes, signal, filters, dead_time=15, min_amplitude=BAR,
                                                  shares=shares)

    assert len(none[0]) == 0
    assert kept_filters.tolist() == [0] and indices.tolist() == [100]
    assert abs(triplets.sum() - 7.0) < 0.1  # refitted on the data: the whole spike, not its share
