"""Shift-invariant similarity: on a probe, blocks of neighbouring shapes against the shapes that share their channels."""

import numpy as np

from engine.model.similarity import normalised_cross_correlation, shift_invariant_similarity


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
