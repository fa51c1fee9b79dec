"""The compiled power iteration behind CRsAE.lipschitz, against an exact eigen-solve."""

import numpy as np

from engine.model.power_iteration import largest_eigenvalues


def _local_problem(seed: int = 0, n_frequencies: int = 24, n_filters: int = 7, n_channels: int = 9):
    """Each filter on 2-4 channels of its own (padded with -1), random complex coefficients there."""
    rng = np.random.default_rng(seed)
    widths = rng.integers(2, 5, n_filters)
    channels = np.full((n_filters, widths.max()), -1, dtype=np.int64)
    for k, width in enumerate(widths):
        channels[k, :width] = np.sort(rng.choice(n_channels, width, replace=False))
    local = rng.standard_normal((n_frequencies, n_filters, widths.max())) + 1j * rng.standard_normal(
        (n_frequencies, n_filters, widths.max()))
    local[:, channels < 0] = 0.0
    dense = np.zeros((n_frequencies, n_channels, n_filters), dtype=complex)  # H(f): channels × filters
    for k in range(n_filters):
        for n in range(widths[k]):
            dense[:, channels[k, n], k] = local[:, k, n]
    start = rng.standard_normal((n_frequencies, n_filters)).astype(complex)
    return local, channels, n_channels, start, dense


def test_power_steps_reach_each_frequencys_largest_eigenvalue_from_below():
    local, channels, n_channels, start, dense = _local_problem()
    exact = np.linalg.eigvalsh(np.conj(dense.transpose(0, 2, 1)) @ dense)[:, -1]
    converged = largest_eigenvalues(local, channels, n_channels, start, 2000)
    np.testing.assert_allclose(converged, exact, rtol=1e-6)
    few = largest_eigenvalues(local, channels, n_channels, start, 3)
    assert np.all(few <= exact * (1 + 1e-9)) and np.any(few < exact * (1 - 1e-4))  # a Rayleigh quotient: below


def test_the_start_is_left_as_it_was():
    local, channels, n_channels, start, _ = _local_problem(seed=1)
    before = start.copy()
    largest_eigenvalues(local, channels, n_channels, start, 10)
    np.testing.assert_array_equal(start, before)
