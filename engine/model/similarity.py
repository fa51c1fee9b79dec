"""How alike two spike shapes are, whatever their alignment.

One measure serves pruning (duplicate filters), the split step, phy's
similar_templates.npy and scoring against ground truth: the best normalised
cross-correlation over all integer time shifts, summed over channels.
"""

from __future__ import annotations

import numpy as np


def normalised_cross_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n_a, n_b, n_taps_a + n_taps_b − 1) correlation of unit-norm shapes at every integer lag.

    `a` is (n_a, n_taps_a, n_channels), `b` is (n_b, n_taps_b, n_channels). Each
    shape is scaled to unit norm over (taps, channels); an all-zero shape stays
    zero, so it correlates 0 with everything. Lags run from −(n_taps_b − 1) to n_taps_a − 1.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 3 or b.ndim != 3 or a.shape[2] != b.shape[2]:
        raise ValueError(
            f"shapes must be (n, n_taps, n_channels) with equal n_channels, got {a.shape} and {b.shape}"
        )
    a, b = _unit_norm(a), _unit_norm(b)
    n_lags = a.shape[1] + b.shape[1] - 1
    if a.shape[0] == 0 or b.shape[0] == 0 or n_lags <= 0:
        return np.zeros((a.shape[0], b.shape[0], max(n_lags, 0)))
    n_fft = 1 << (n_lags - 1).bit_length()  # zero padding to here makes the circular correlation linear
    spectrum_a = np.fft.rfft(a, n_fft, axis=1).transpose(1, 0, 2)  # (n_freqs, n_a, n_channels)
    spectrum_b = np.fft.rfft(b, n_fft, axis=1).transpose(1, 2, 0)  # (n_freqs, n_channels, n_b)
    # One matrix product per frequency sums over channels: fast even for hundreds of channels.
    cross = np.fft.irfft(spectrum_a @ spectrum_b.conj(), n_fft, axis=0)  # (n_fft, n_a, n_b), lag 0 first
    lags = np.arange(-(b.shape[1] - 1), a.shape[1])
    return cross[lags % n_fft].transpose(1, 2, 0)


def _unit_norm(shapes: np.ndarray) -> np.ndarray:
    norms = np.sqrt((shapes**2).sum(axis=(1, 2), keepdims=True))
    return np.divide(shapes, norms, out=np.zeros_like(shapes), where=norms > 0)


def shift_invariant_similarity(filters: np.ndarray) -> np.ndarray:
    """(n, n) best normalised cross-correlation over shifts. filters: (n, n_taps, n_channels)."""
    return normalised_cross_correlation(filters, filters).max(axis=2)
