"""Shift-invariant similarity: on a probe, blocks of neighbouring shapes against the shapes that share their channels."""

import numpy as np

from engine.model.similarity import (corrected_similarity, mean_reliability, normalised_cross_correlation,
                                     shift_invariant_similarity)


def local_shapes(rng, n, n_channels, width, n_taps=40):
    shapes = np.zeros((n, n_taps, n_channels), dtype=np.float32)
    for index in range(n):
        first = rng.integers(0, n_channels - width + 1)
        shapes[index, :, first : first + width] = rng.standard_normal((n_taps, width))
    return shapes


def test_shapes_on_neighbourhoods_of_a_probe_score_as_over_every_channel():
    """The blocked route (shapes on a few channels of many) must give every pair what the product over
    every channel and lag gives: 0 for shapes without a shared channel, the same best shift for the rest,
    an all-zero shape 0 with everything; and a shape is 1 with itself and with a shifted copy of itself."""
    rng = np.random.default_rng(7)
    shapes = local_shapes(rng, 90, 128, 6)
    shapes[5] = 0.0
    shapes[7] = 0.0
    shapes[7, 3:] = shapes[6, :-3] * 2.0  # a shifted, scaled copy (3 of 40 taps lost)
    similarity = shift_invariant_similarity(shapes)
    dense = normalised_cross_correlation(shapes, shapes).max(axis=2)
    np.testing.assert_allclose(similarity, dense, atol=1e-12)
    on = np.any(shapes != 0, axis=1)
    apart = (on.astype(int) @ on.T.astype(int)) == 0
    assert apart.any() and np.all(similarity[apart] == 0) and np.all(similarity[5] == 0)
    assert similarity[6, 7] > 0.9 and np.allclose(np.diag(similarity)[np.arange(90) != 5], 1.0)


def test_shapes_spanning_the_probe_take_the_product_over_every_channel():
    rng = np.random.default_rng(8)
    shapes = local_shapes(rng, 50, 16, 12)
    np.testing.assert_allclose(shift_invariant_similarity(shapes),
                               normalised_cross_correlation(shapes, shapes).max(axis=2), atol=1e-12)
    assert shift_invariant_similarity(np.zeros((0, 40, 16))).shape == (0, 0)


def noisy_spikes(rng, shape, n, sigma=1.0):
    return shape[None] + sigma * rng.standard_normal((n,) + shape.shape)


def test_means_of_few_noisy_spikes_of_one_shape_compare_as_the_shape_once_their_noise_is_taken_out():
    """Two means of 40 spikes of one shape at 3.5 σ are well under 0.97 alike by their noise alone; corrected
    for it they are one shape, and two shapes 0.8 alike stay 0.8 alike."""
    rng = np.random.default_rng(3)
    taps = np.arange(40)[:, None]
    trough = -np.exp(-0.5 * ((taps - 15) / 2.5) ** 2)
    one = 3.5 * trough * np.array([1.0, 0.7, 0.4, 0.2, 0.1, 0.0])
    other = 3.5 * trough * np.array([0.2, 0.5, 1.0, 0.6, 0.3, 0.1])
    true = normalised_cross_correlation(one[None], other[None]).max()
    raw, corrected, pair = [], [], []
    for _ in range(20):
        halves = [noisy_spikes(rng, one, 40), noisy_spikes(rng, one, 40), noisy_spikes(rng, other, 40)]
        means = np.stack([h.mean(axis=0) for h in halves])
        reliability = [mean_reliability(h) for h in halves]
        similarity = shift_invariant_similarity(means)
        raw.append(similarity[0, 1])
        fixed = corrected_similarity(similarity, reliability)
        corrected.append(fixed[0, 1])
        pair.append(fixed[0, 2])
    assert np.median(raw) < 0.95
    assert np.median(corrected) > 0.985 and min(corrected) > 0.96
    assert abs(np.median(pair) - true) < 0.03 and max(pair) < 0.9


def test_a_mean_without_noise_is_fully_reliable_and_one_of_noise_alone_gets_the_floor():
    rng = np.random.default_rng(4)
    shape = rng.standard_normal((40, 4))
    assert mean_reliability(np.repeat(shape[None], 10, axis=0)) == 1.0
    assert mean_reliability(rng.standard_normal((30, 40, 4))) == 0.8
    assert mean_reliability(rng.standard_normal((30, 40, 4)), floor=0.1) < 0.5
    assert np.all(corrected_similarity(np.array([[1.0, 0.9], [0.9, 1.0]]), [0.9, 0.9]) <= 1.0)
