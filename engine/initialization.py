"""Start the dictionary near real spike shapes: threshold crossings, clustered.

Training from random filters wastes most of its steps finding where spikes
are; a k-means of threshold-crossing snippets gives one rough shape per
cluster in a fraction of a second, and back-propagation refines it.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

# Where the extremum sits inside a filter: spikes are asymmetric (a short
# trough, a long repolarisation), so the peak goes a little before the middle.
PEAK_FRACTION = 0.4


def detect_peaks(signal: np.ndarray, threshold: float, dead_time: int) -> tuple[np.ndarray, np.ndarray]:
    """Negative peaks below -threshold on any channel, at least `dead_time` apart.

    signal: (n_channels, n_samples) noise-normalised. Returns (times, channels).
    """
    troughs = signal.min(axis=0)  # (n_samples,) most negative value across channels
    channels = signal.argmin(axis=0)
    below = troughs < -threshold
    # A local minimum of the envelope: lower than both neighbours.
    is_minimum = np.zeros_like(below)
    is_minimum[1:-1] = (troughs[1:-1] <= troughs[:-2]) & (troughs[1:-1] < troughs[2:])
    candidates = np.flatnonzero(below & is_minimum)
    if candidates.size == 0:
        return candidates, candidates
    # Greedy dead time, biggest first, so a large spike wins over its own ripples.
    order = candidates[np.argsort(troughs[candidates])]
    taken = np.zeros(signal.shape[1], dtype=bool)
    kept = []
    for time in order:
        lo, hi = max(time - dead_time, 0), time + dead_time + 1
        if not taken[lo:hi].any():
            kept.append(time)
            taken[time] = True
    kept_times = np.sort(np.asarray(kept, dtype=np.int64))
    return kept_times, channels[kept_times]


def initial_filters(
    signal: np.ndarray,
    n_filters: int,
    n_taps: int,
    threshold: float = 5.0,
    max_snippets: int = 20000,
    seed: int = 0,
) -> np.ndarray:
    """(n_filters, n_channels, n_taps) unit-norm filters from k-means of snippets.

    signal: (n_channels, n_samples) noise-normalised pool of training data.
    Clusters are ordered by size; if there are too few spikes to fill every
    filter, the rest start as random smooth shapes (training may use them).
    """
    rng = np.random.default_rng(seed)
    n_channels, n_samples = signal.shape
    peak_tap = int(PEAK_FRACTION * n_taps)
    times, _ = detect_peaks(signal, threshold, dead_time=max(n_taps // 4, 1))
    times = times[(times - peak_tap >= 0) & (times - peak_tap + n_taps <= n_samples)]
    if times.size > max_snippets:
        times = np.sort(rng.choice(times, max_snippets, replace=False))

    filters = np.zeros((n_filters, n_channels, n_taps), dtype=np.float32)
    n_found = 0
    if times.size >= n_filters:
        offsets = np.arange(n_taps) - peak_tap
        snippets = signal[:, times[:, None] + offsets[None, :]]  # (n_channels, n_spikes, n_taps)
        snippets = snippets.transpose(1, 0, 2).reshape(times.size, -1)
        n_components = min(10, snippets.shape[1], snippets.shape[0])
        features = PCA(n_components=n_components, random_state=seed).fit_transform(snippets)
        labels = KMeans(n_clusters=n_filters, n_init=4, random_state=seed).fit_predict(features)
        sizes = np.bincount(labels, minlength=n_filters)
        for cluster in np.argsort(-sizes):
            if sizes[cluster] == 0:
                continue
            mean = snippets[labels == cluster].mean(axis=0).reshape(n_channels, n_taps)
            filters[n_found] = mean
            n_found += 1
    for index in range(n_found, n_filters):
        filters[index] = _random_spike_like(rng, n_channels, n_taps, peak_tap)
    norms = np.linalg.norm(filters.reshape(n_filters, -1), axis=1).reshape(-1, 1, 1)
    return (filters / np.maximum(norms, 1e-12)).astype(np.float32)


def _random_spike_like(rng: np.random.Generator, n_channels: int, n_taps: int, peak_tap: int) -> np.ndarray:
    """A smooth random negative bump: a neutral start for a filter with no data."""
    taps = np.arange(n_taps)
    width = max(n_taps / 12, 1.0)
    bump = -np.exp(-0.5 * ((taps - peak_tap) / width) ** 2)
    weights = rng.uniform(0.2, 1.0, size=(n_channels, 1))
    return (weights * bump[None, :] + 0.05 * rng.standard_normal((n_channels, n_taps))).astype(np.float32)
