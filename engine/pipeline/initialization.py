"""Start the dictionary near real spike shapes: threshold crossings, clustered.

Training from random filters wastes most of its steps finding where spikes
are; a k-means of threshold-crossing snippets gives one rough shape per
cluster in a fraction of a second, and back-propagation refines it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from scipy.ndimage import maximum_filter1d
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from engine.cpu import adapt_threads, in_order
from engine.model.pairs import pairs_in_runs
from engine.model.similarity import corrected_similarity, mean_reliability, shift_invariant_similarity
from engine.pipeline.amplitude_split import amplitude_groups
from engine.pipeline.explain_away import subtract_filters
from engine.pipeline.params import (DETECTION_THRESHOLD, DUPLICATE_SIMILARITY, LOCAL_DETECTION_MIN_CHANNELS,
                                    MIN_USE_FRACTION, PEAK_FRACTION)


def detect_peaks(signal: np.ndarray, threshold: float, dead_time: int) -> tuple[np.ndarray, np.ndarray]:
    """Negative peaks below -threshold on any channel, at least `dead_time` apart.

    signal: (n_channels, n_samples) noise-normalised. Returns (times, channels).
    """
    troughs = signal.min(axis=0)  # (n_samples,) most negative value across channels
    below = troughs < -threshold
    # A local minimum of the envelope: lower than both neighbours.
    is_minimum = np.zeros_like(below)
    is_minimum[1:-1] = (troughs[1:-1] <= troughs[:-2]) & (troughs[1:-1] < troughs[2:])
    candidates = np.flatnonzero(below & is_minimum)
    if candidates.size == 0:
        return candidates.astype(np.int64), candidates.astype(np.int64)
    # Greedy dead time, biggest first, so a large spike wins over its own ripples.
    order = candidates[np.argsort(troughs[candidates])].astype(np.int64)
    kept_times = np.sort(_biggest_first(order, signal.shape[1], int(dead_time)))
    # The channel of each kept trough only: argmin across the channels of every sample (a strided
    # pass over the whole pool) was most of the initial dictionary's time on a 5-minute tetrode.
    return kept_times, signal[:, kept_times].argmin(axis=0)


# Compiled: in Python this loop over every candidate was 3 s of a 5-minute tetrode's sort.
@numba.njit(cache=True)
def _biggest_first(order, n_samples, dead_time):
    """The times of `order` (biggest first) kept when none kept before lies within `dead_time`."""
    taken = np.zeros(n_samples, dtype=np.bool_)
    kept = np.empty(order.size, dtype=np.int64)
    n_kept = 0
    for time in order:
        free = True
        for other in range(max(time - dead_time, 0), min(time + dead_time + 1, n_samples)):
            if taken[other]:
                free = False
                break
        if free:
            kept[n_kept] = time
            n_kept += 1
            taken[time] = True
    return kept[:n_kept]


def detect_peaks_locally(signal: np.ndarray, threshold: float, dead_time: int,
                         neighbourhoods: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Negative peaks below -threshold, each the lowest within `dead_time` samples on its own
    channel's neighbourhood (locally exclusive), so that spikes at once on far-apart channels are all kept.

    `detect_peaks` keeps one spike per dead time on the whole probe: at 384 channels, where the
    probe fires ~1,500 spikes a second, the biggest of each millisecond hid the rest, and units of
    5-12 σ never got a cluster (measured: 22 of 100 units of a 20 s Neuropixels-like recording had
    no filter). signal: (n_channels, n_samples) noise-normalised; neighbourhoods: (n_channels,
    n_channels) bool. Returns (times, channels), in time order.
    """
    found = []
    for start in range(0, signal.shape[0], 32):  # a block of channels at a time: the pool can be 64 M values
        block = signal[start : start + 32]
        lowest_nearby_in_time = -maximum_filter1d(-block, 2 * dead_time + 1, axis=1, mode="nearest")
        rows, columns = np.nonzero((block < -threshold) & (block <= lowest_nearby_in_time))
        found.append((rows + start, columns))
    channels, times = (np.concatenate(parts) for parts in zip(*found))
    if times.size == 0:
        return times.astype(np.int64), channels.astype(np.int64)
    order = np.lexsort((channels, times))
    times, channels = times[order].astype(np.int64), channels[order].astype(np.int64)
    values = signal[channels, times]
    # A candidate loses to a lower one (ties: the earlier) within the dead time on a neighbouring channel.
    first = np.searchsorted(times, times - dead_time, side="left")
    last = np.searchsorted(times, times + dead_time, side="right")
    beaten = np.zeros(times.size, dtype=bool)
    rows, columns = pairs_in_runs(first, last)
    other = (rows != columns) & neighbourhoods[channels[rows], channels[columns]]
    rows, columns = rows[other], columns[other]
    lower = (values[columns] < values[rows]) | ((values[columns] == values[rows]) & (columns < rows))
    beaten[rows[lower]] = True
    return times[~beaten], channels[~beaten]


def detect_peaks_on_probe(signal: np.ndarray, threshold: float, dead_time: int,
                          neighbourhoods: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(times, channels): `detect_peaks_locally` from LOCAL_DETECTION_MIN_CHANNELS channels up, where
    many spikes meet on the probe at once; below, `detect_peaks` (one per dead time on the whole probe)."""
    if signal.shape[0] >= LOCAL_DETECTION_MIN_CHANNELS:
        return detect_peaks_locally(signal, threshold, dead_time, neighbourhoods)
    return detect_peaks(signal, threshold, dead_time)


def initial_filters(
    signal: np.ndarray,
    n_filters: int,
    n_taps: int,
    threshold: float = DETECTION_THRESHOLD,
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


def initial_filters_by_neighbourhood(
    signal: np.ndarray,
    neighbourhoods: np.ndarray,
    n_taps: int,
    filters_per_channel: int,
    max_filters: int,
    threshold: float = DETECTION_THRESHOLD,
    max_snippets: int = 20000,
    seed: int = 0,
    min_use_fraction: float = MIN_USE_FRACTION,
    duplicate_similarity: float = DUPLICATE_SIMILARITY,
) -> np.ndarray:
    """(n_filters, n_channels, n_taps) unit-norm filters, clustered channel by channel on a probe.

    Spikes are detected per neighbourhood on big probes (`detect_peaks_locally`); each
    belongs to the channel where it is biggest; the spikes of a channel are cut on
    that channel's neighbourhood only and clustered
    there, so a cluster's mean is a filter that lives on the neighbourhood
    (zero elsewhere). This keeps the clustering's size that of a neighbourhood,
    not of the probe: a snippet on 384 channels × 120 taps is 46,080 values, on
    a 100 µm neighbourhood ~40 × 120. Look-alike filters of neighbouring
    channels (one neuron seen from two channels) are merged later by pruning.

    Before the dictionary is coded, two cheap rules shrink it, because the
    first pruning pass codes the pool with every filter and its cost grows
    with their number (measured on a 16-channel, 5-unit simulation: 66
    clusters, 42 of them idle, and that pass took 77 % of the sort). A cluster
    smaller than `min_use_fraction` of the biggest is dropped: pruning's own
    bar, applied to snippet counts instead of coded spikes. Of clusters at
    least `duplicate_similarity` alike (one neuron cut in pieces by k-means,
    or seen from two channels), the biggest is kept; alike as their shapes,
    not their noisy means, would be (engine.model.similarity.corrected_similarity). At most `max_filters`
    are kept, the biggest clusters first.
    """
    rng = np.random.default_rng(seed)
    n_channels, n_samples = signal.shape
    peak_tap = int(PEAK_FRACTION * n_taps)
    dead_time = max(n_taps // 4, 1)
    times, channels = detect_peaks_on_probe(signal, threshold, dead_time, neighbourhoods)
    inside = (times - peak_tap >= 0) & (times - peak_tap + n_taps <= n_samples)
    times, channels = times[inside], channels[inside]
    if times.size > max_snippets:
        chosen = np.sort(rng.choice(times.size, max_snippets, replace=False))
        times, channels = times[chosen], channels[chosen]
    offsets = np.arange(n_taps) - peak_tap
    means, sizes, reliabilities = [], [], []

    def clusters_of(channel: int) -> tuple | None:
        """The channel's spikes on its neighbourhood, clustered: (near, snippets, labels, n_clusters)."""
        mine = times[channels == channel]
        near = np.flatnonzero(neighbourhoods[channel])
        n_clusters = min(filters_per_channel, mine.size // 2)
        if n_clusters < 1:
            return None
        # (n_near, n_spikes, n_taps), gathered in one step: signal[near] first copied the neighbourhood's whole
        # signal for every channel (5 s of a 5-minute 32-channel sort).
        snippets = signal[near[:, None, None], (mine[:, None] + offsets[None, :])[None]]
        snippets = snippets.transpose(1, 0, 2).reshape(mine.size, -1)
        n_components = min(10, snippets.shape[1], snippets.shape[0])
        features = PCA(n_components=n_components, random_state=seed).fit_transform(snippets)
        labels = KMeans(n_clusters=n_clusters, n_init=2, random_state=seed).fit_predict(features)
        return near, snippets, labels, n_clusters

    # Each channel's clustering on a free core, as split_mixed_filters' are; the means taken in channel order.
    for clustered in in_order(clusters_of, list(range(n_channels)), adapt_threads()):
        if clustered is None:
            continue
        near, snippets, labels, n_clusters = clustered
        for cluster in range(n_clusters):
            members = labels == cluster
            if not members.any():
                continue
            mean = np.zeros((n_channels, n_taps), dtype=np.float32)
            mean[near] = snippets[members].mean(axis=0).reshape(near.size, n_taps)
            means.append(mean)
            sizes.append(int(members.sum()))
            reliabilities.append(mean_reliability(snippets[members]))
    if not means:
        return initial_filters(signal, min(filters_per_channel, max_filters), n_taps, threshold, max_snippets, seed)
    sizes = np.asarray(sizes)
    order = np.argsort(-sizes, kind="stable")
    order = order[sizes[order] >= min_use_fraction * sizes.max()]
    filters = np.stack([means[i] for i in order])
    norms = np.linalg.norm(filters.reshape(len(filters), -1), axis=1).reshape(-1, 1, 1)
    filters = (filters / np.maximum(norms, 1e-12)).astype(np.float32)
    # Biggest first: a filter is dropped when a bigger kept one is a duplicate of it.
    # Compared as the clusters' shapes would be without the noise left in their means (corrected_similarity).
    similarity = corrected_similarity(shift_invariant_similarity(filters.transpose(0, 2, 1)),
                                      np.asarray(reliabilities)[order])
    kept: list[int] = []
    for index in range(len(filters)):
        if not any(similarity[index, other] >= duplicate_similarity for other in kept):
            kept.append(index)
    return filters[kept[:max_filters]]


def _random_spike_like(rng: np.random.Generator, n_channels: int, n_taps: int, peak_tap: int) -> np.ndarray:
    """A smooth random negative bump: a neutral start for a filter with no data."""
    taps = np.arange(n_taps)
    width = max(n_taps / 12, 1.0)
    bump = -np.exp(-0.5 * ((taps - peak_tap) / width) ** 2)
    weights = rng.uniform(0.2, 1.0, size=(n_channels, 1))
    return (weights * bump[None, :] + 0.05 * rng.standard_normal((n_channels, n_taps))).astype(np.float32)


def _unit_norm_means(snippets: np.ndarray, labels: np.ndarray, n_channels: int, n_taps: int) -> np.ndarray:
    """(2, n_channels, n_taps) the unit-norm mean of the snippets (n, n_channels × n_taps) labelled 0 and 1."""
    halves = np.stack([snippets[labels == half].mean(axis=0).reshape(n_channels, n_taps) for half in (0, 1)])
    return halves / np.maximum(np.linalg.norm(halves.reshape(2, -1), axis=1), 1e-12)[:, None, None]


@dataclass
class FilterSplit:
    """What split_mixed_filters did."""

    filters: np.ndarray  # (n_filters + len(split), n_channels, n_taps): the split filters keep their
    # index and hold their bigger half; each smaller half is appended, in the order of `split`
    split: list[int]  # the filters split in two
    # (n_spikes,) the filter each given spike now belongs to: its half's, for a split filter's spikes
    # (spikes too near the signal's ends to be clustered stay with the filter they had)
    spike_filters: np.ndarray


# A channel joins a split's clustering when its snippets carry this much more energy than noise
# (the signal is noise-normalised: 1 per sample). A neuron of peak SNR 5 folded into a third of a
# filter's spikes adds about 0.25 at its channel; the estimate's own spread over 200 spikes of
# 90 taps is 0.01.
CLUSTERING_EXCESS_ENERGY = 0.1


def channels_with_spikes(snippets: np.ndarray, own_filter: np.ndarray) -> np.ndarray:
    """(n_channels,) bool: the channels a filter's snippets (n_spikes, n_channels × n_taps) carry
    spikes on, i.e. the channels that can tell its neurons apart: its own, and any whose mean
    energy per sample exceeds the noise's by CLUSTERING_EXCESS_ENERGY.

    On a Neuropixels probe every other channel is noise for one filter's spikes, and clustering
    them all (46 k features a spike at 384 channels) was 70 % of the split's 25 s; taking only
    the filter's own channels (or those within 2.5 radii) instead lost a unit that lives beyond
    them on a small probe (tests/test_probe_scale.py), so channels are chosen by what they hold."""
    n_channels, n_taps = own_filter.shape
    per_channel = snippets.reshape(-1, n_channels, n_taps)
    energy = np.einsum("sct,sct->c", per_channel, per_channel) / (per_channel.shape[0] * n_taps)
    return (energy > 1.0 + CLUSTERING_EXCESS_ENERGY) | np.any(own_filter != 0, axis=1)


def split_mixed_filters(
    signal: np.ndarray,
    filters: np.ndarray,
    code_index: np.ndarray,
    spike_filters: np.ndarray,
    amplitudes: np.ndarray,
    distinct_below: float,
    min_spikes: int,
    seed: int = 0,
) -> FilterSplit:
    """Split each filter whose spikes form two distinct shapes (see FilterSplit for what is returned).

    k-means over all snippets folds a rare neuron into a similar, busier one
    (measured on the tetrode: a 3 Hz unit 0.93 alike to a 13 Hz one). Such a
    filter's own spikes, clustered in two, give two means that are less alike
    than `distinct_below` (the duplicate threshold); one neuron's spikes give
    two near-identical means (they differ in amplitude jitter only) and stay
    one, unless their code amplitudes fall into two groups well apart
    (amplitude_split.amplitude_groups): then they are two neurons of one shape,
    and each group's mean becomes a filter. Both halves need `min_spikes`. A
    wrong split is undone by pruning, which merges duplicates (of like size)
    and drops filters that win too few spikes.

    Each snippet has the other spikes' fitted shapes subtracted: otherwise the
    halves split clean spikes from overlapped ones instead of neuron from neuron.

    k-means halves one neuron's spikes too, along its noise, and with a few
    hundred spikes the halves' means differ by their noise and by what k-means
    selected: on the simulator's 60-s whitened 32-channel probe (seed 11) one
    neuron's filter halves were 0.89-0.95 alike, it was split, and the neuron
    ended in five units. So k-means clusters every other spike, the others are
    only labelled, and the halves are compared on those (free of the selection)
    as their shapes would be without their means' noise (corrected_similarity).
    Measured side by side with the old test (with the duplicates' correction in
    initial_filters_by_neighbourhood and the faint search's noise bar): on the
    simulator's 10- and 60-s probes (seeds 11-14, 16 and 32 channels, eight
    whitened and two not) more accurate on 6 of 10 (at 10 s 0.70-0.77 -> 0.89-0.96),
    even on 3, less on 1 (60 s, 16 channels, seed 14, whitened: 0.965 -> 0.920,
    two neurons 0.92 alike sharing a unit), 11-29 units for 10 neurons -> 10-15;
    SpikeInterface's 5-min 32-channel probes, tetrodes and the demo within
    ±0.0013, with the same units.

    signal: (n_channels, n) noise-normalised; filters: (n_filters, n_channels, n_taps);
    code_index: (n_spikes,) where each spike's filter starts; amplitudes: its code
    amplitude. New filters are appended.
    """
    n_filters, n_channels, n_taps = filters.shape
    regrouped = np.array(spike_filters, dtype=np.int64, copy=True)
    valid = (code_index >= 0) & (code_index + n_taps <= signal.shape[1])
    spike_index = np.flatnonzero(valid)
    code_index, spike_filters, amplitudes = code_index[valid], spike_filters[valid], amplitudes[valid]
    # The fitted spikes on their filters' channels only (full-width, they took GBs at 384 channels).
    # The snippets below keep every channel: taken on the filter's channels only, the small probe
    # of tests/test_probe_scale.py lost a unit (3 well detected of 5 -> 2), so that was not kept;
    # they are clustered on the channels that hold spikes (channels_with_spikes).
    residual = subtract_filters(signal, code_index, amplitudes, filters, spike_filters)
    result = [f for f in filters]
    split = []

    def halves_of(k: int) -> tuple | None:
        """Filter k's spikes clustered in two: (spikes, snippets, labels, sizes), None when too few."""
        mine = spike_filters == k
        starts = code_index[mine]
        if starts.size < 2 * min_spikes:
            return None
        snippets = residual[:, starts[:, None] + np.arange(n_taps)[None, :]]  # (n_channels, n_spikes, n_taps)
        snippets = snippets.transpose(1, 0, 2) + amplitudes[mine][:, None, None] * filters[k][None]
        snippets = snippets.reshape(starts.size, -1)
        clustered = snippets.reshape(starts.size, n_channels, n_taps)[:, channels_with_spikes(snippets, filters[k])]
        # Clustered on every other spike, the rest only labelled: k-means finds two halves in one neuron's noise
        # too, and the halves' means differ by what it selected; the held-out spikes' means do not.
        clustered = clustered.reshape(starts.size, -1)
        learned = np.arange(starts.size) % 2 == 0
        pca = PCA(n_components=min(5, clustered.shape[1]), random_state=seed).fit(clustered[learned])
        kmeans = KMeans(n_clusters=2, n_init=4, random_state=seed).fit(pca.transform(clustered[learned]))
        labels = kmeans.predict(pca.transform(clustered)).astype(np.int64)
        return mine, snippets, labels, np.bincount(labels, minlength=2), ~learned

    # Each filter's clustering on a free core, taken in filter order: sklearn's PCA and k-means leave the GIL
    # for most of their work (30 clusterings of 500-5,000 snippets: 1.24 s one after another, 0.90 s two at a
    # time, the same labels), and each filter's is its own.
    for k, clustered in enumerate(in_order(halves_of, list(range(n_filters)), adapt_threads())):
        if clustered is None:
            continue
        mine, snippets, labels, sizes, held_out = clustered
        if sizes.min() < min_spikes:
            continue
        groups = None
        halves = _unit_norm_means(snippets, labels, n_channels, n_taps)
        # Judged on the spikes the clustering did not see, as their shapes would be without the noise left in
        # their means: one neuron's spikes, halved, otherwise look two shapes whenever they are few.
        if np.bincount(labels[held_out], minlength=2).min() < 2:  # a half all among the clustered spikes
            held_out = np.ones_like(held_out)
        tested = _unit_norm_means(snippets[held_out], labels[held_out], n_channels, n_taps)
        reliability = [mean_reliability(snippets[held_out & (labels == half)]) for half in (0, 1)]
        similarity = corrected_similarity(shift_invariant_similarity(tested.transpose(0, 2, 1)), reliability)[0, 1]
        if similarity >= distinct_below:
            # One shape; but two neurons of one shape at different distances differ in size (measured on
            # SpikeInterface's 32-channel probe: code amplitudes ~377 and ~134, shapes 0.97-0.99 alike).
            # One filter for both fits neither, and its residual on every spike of the bigger one became
            # thousands of false spikes of that filter and its neighbours'.
            groups = amplitude_groups(amplitudes[mine], min_spikes)
            if groups is not None:
                labels = (amplitudes[mine] > groups[0]).astype(np.int64)
                sizes = np.bincount(labels, minlength=2)
                halves = _unit_norm_means(snippets, labels, n_channels, n_taps)
        if similarity < distinct_below or groups is not None:
            bigger = int(np.argmax(sizes))
            result[k] = halves[bigger].astype(np.float32)
            result.append(halves[1 - bigger].astype(np.float32))
            regrouped[spike_index[mine][labels != bigger]] = len(result) - 1
            split.append(k)
    return FilterSplit(np.stack(result).astype(np.float32), split, regrouped)
