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
    return _cross_correlation(_unit_norm(a), _unit_norm(b))


def _cross_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """normalised_cross_correlation of shapes already scaled (float64)."""
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


def mean_reliability(snippets: np.ndarray, floor: float = 0.8) -> float:
    """How much of a mean shape's norm is shape rather than the noise left in the mean: sqrt(1 − e / |m|²),
    where m is the mean of `snippets` (n, ...) and e its noise energy (each value's spread over the
    snippets, summed, over n). At least `floor`: a mean that is mostly noise is not trusted to look like
    anything (with the default, no similarity grows by more than 1 / 0.8²).

    Two means of one neuron's spikes correlate at about r₁·r₂, not 1 (see `corrected_similarity`)."""
    snippets = np.asarray(snippets, dtype=np.float64).reshape(len(snippets), -1)
    if len(snippets) == 0:
        return floor
    mean = snippets.mean(axis=0)
    energy = float(mean @ mean)
    noise = float(snippets.var(axis=0).sum()) / len(snippets)
    if energy <= 0.0:
        return floor
    return float(np.sqrt(np.clip(1.0 - noise / energy, floor**2, 1.0)))


def corrected_similarity(similarity: np.ndarray, reliability: np.ndarray) -> np.ndarray:
    """`similarity` (n, n) of noisy mean shapes as it would be of their noiseless ones: each entry over the
    product of the two means' `mean_reliability` (1 for a shape without noise, a learned filter), at most 1
    (Spearman's correction for attenuation). With many spikes a mean's reliability is ~1 and this changes
    nothing; with few it keeps two halves of one neuron from being told apart by their noise alone.

    Measured on the simulator's 60-s, 32-channel probe (seed 11, whitened): clusters of 60-400 spikes of
    one neuron were 0.90-0.97 alike, under the 0.97 bar, and the neuron ended in five units (0.897; with
    the correction 0.997). Used where means of spikes are compared with a bar: the first dictionary's
    duplicates and mixed filters (engine/pipeline/initialization.py) and the faint search's candidates."""
    reliability = np.asarray(reliability, dtype=np.float64)
    return np.minimum(np.asarray(similarity) / np.outer(reliability, reliability), 1.0)


# Shapes compared at once (rows of the similarity matrix) when they live on a few channels of many.
_ROWS_PER_BLOCK = 32


def shift_invariant_similarity(filters: np.ndarray) -> np.ndarray:
    """(n, n) best normalised cross-correlation over shifts. filters: (n, n_taps, n_channels).

    Shapes that share no channel correlate 0 at every shift. On a probe, where each shape lives on
    a neighbourhood, a block of shapes (neighbours on the probe, taken together) is compared only
    with the shapes it shares a channel with, on its own channels: the whole n × n × lags product
    over every channel was a third of the initial dictionary's time at 384 channels (~700 shapes)
    and its largest allocation (n² × lags)."""
    filters = np.asarray(filters, dtype=np.float64)
    if filters.ndim != 3:
        raise ValueError(f"shapes must be (n, n_taps, n_channels), got {filters.shape}")
    unit = _unit_norm(filters)
    n, _, n_channels = unit.shape
    on_channel = np.any(unit != 0, axis=1)  # (n, n_channels)
    if n <= _ROWS_PER_BLOCK or on_channel.sum(axis=1).max(initial=0) * 4 > n_channels:
        return _cross_correlation(unit, unit).max(axis=2) if n else np.zeros((0, 0))
    sharing = (on_channel.astype(np.int32) @ on_channel.T.astype(np.int32)) > 0
    similarity = np.zeros((n, n))
    # Neighbours together (by their first channel), so that a block's channels and partners stay few.
    order = np.argsort(np.argmax(on_channel, axis=1), kind="stable")
    for start in range(0, n, _ROWS_PER_BLOCK):
        rows = order[start : start + _ROWS_PER_BLOCK]
        partners = np.flatnonzero(sharing[rows].any(axis=0))
        channels = np.flatnonzero(on_channel[rows].any(axis=0))  # off these the rows are 0: no term
        if partners.size and channels.size:
            block = _cross_correlation(unit[rows][:, :, channels], unit[partners][:, :, channels]).max(axis=2)
            similarity[np.ix_(rows, partners)] = block
    return similarity
