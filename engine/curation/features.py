"""Per-spike features for the cluster views: waveform principal components and code amplitude.

A spike's snippet is cut from the preprocessed recording on the best channels
of the template that found it, projected on a few temporal principal
components (shared by all channels, as Kilosort's PC features are), and
placed in one space common to every spike: channel c's components occupy
their own columns, zero for spikes that do not use c, and the code amplitude
is one more column. A principal component analysis of that space gives the
features: low-dimensional, comparable across units, ordered by variance (the
first two are the PCA view; all of them feed t-SNE and k-means).

Snippets are read in groups of nearby spikes, each read bounded in size, so
memory never depends on the length of the recording, only on the number of
spikes asked for (and that, too, is processed in batches).

    extractor = SpikeFeatureExtractor()
    features = extractor.fit_transform(recording, sorting, spike_indices)  # (n, n_components)
    more = extractor.transform(recording, sorting, other_spike_indices)  # same space
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.linalg

from engine.io.recording import Recording
from engine.pipeline.sorting import Sorting, template_mix

SNIPPET_BEFORE_MS = 1.0  # snippet start, before the spike's extremum
SNIPPET_AFTER_MS = 1.5  # snippet end, after it: the repolarisation is the longer half
CHUNK_VALUES = 1 << 22  # samples × channels in one read: 16 MB of float32
TRANSFORM_BATCH = 50_000  # spikes whose snippets are held at once
PCA_BATCH = 5_000  # rows whose pairwise products are held at once


class Cancelled(Exception):
    """The caller's `should_stop()` turned true; the work was abandoned part-way."""


Progress = Callable[[float], None]  # fraction done, 0..1
ShouldStop = Callable[[], bool]


def snippet_window(sampling_rate: float, before_ms: float = SNIPPET_BEFORE_MS, after_ms: float = SNIPPET_AFTER_MS):
    """(before, after) in samples: a snippet covers [t - before, t + after)."""
    return int(round(before_ms * 1e-3 * sampling_rate)), int(round(after_ms * 1e-3 * sampling_rate))


def read_snippets(
    recording: Recording,
    spike_times: np.ndarray,
    channels: np.ndarray,
    before: int,
    after: int,
    *,
    chunk_values: int = CHUNK_VALUES,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> np.ndarray:
    """(n_spikes, before + after, k) float32 µV snippets, in the order of `spike_times`.

    `channels`: (k,) the same channels for every spike, or (n_spikes, k) each
    spike's own. Samples beyond either end of the recording read as zero.
    A recording with its own `read_snippets` (engine.curation.display_snippets'
    reader for the views) is asked to do it.
    """
    own_reader = getattr(recording, "read_snippets", None)
    if own_reader is not None:
        return own_reader(spike_times, channels, before, after, progress=progress, should_stop=should_stop)
    spike_times = np.asarray(spike_times, dtype=np.int64)
    channels = np.asarray(channels, dtype=np.int64)
    per_spike = channels.ndim == 2
    length = before + after
    snippets = np.zeros((len(spike_times), length, channels.shape[-1]), dtype=np.float32)
    if len(spike_times) == 0:
        return snippets
    order = np.argsort(spike_times, kind="stable")
    times = spike_times[order]  # (n,) ascending
    groups = list(_read_groups(times, length, _join_gap(recording, length), _max_span(recording, chunk_values, length)))
    offsets = np.arange(length)
    for done, (first, last) in enumerate(groups):
        if should_stop is not None and should_stop():
            raise Cancelled()
        spikes = order[first:last]
        block_start = int(times[first]) - before
        if per_spike:
            read_channels, local = np.unique(channels[spikes], return_inverse=True)
            local = local.reshape(len(spikes), -1)  # (m, k) column of each spike's channels in the block
        else:
            read_channels, local = channels, np.arange(len(channels))
        block = _read_padded(recording, block_start, int(times[last - 1]) + after, read_channels)
        rows = (times[first:last] - times[first])[:, None] + offsets  # (m, length) row in the block
        if per_spike:
            snippets[spikes] = block[rows[:, :, None], local[:, None, :]]
        else:
            snippets[spikes] = block[rows][:, :, local]
        if progress is not None:
            progress((done + 1) / len(groups))
    return snippets


def _join_gap(recording: Recording, length: int) -> int:
    # A preprocessed recording reads `margin` extra samples each side of every
    # request; reading the gap between two spikes costs less than a second read
    # up to two margins.
    return 2 * int(getattr(recording, "margin", 0)) + length


def _max_span(recording: Recording, chunk_values: int, length: int) -> int:
    return max(chunk_values // recording.n_channels, 2 * length)


def _read_groups(times: np.ndarray, length: int, join_gap: int, max_span: int):
    """(first, last) ranges of `times` read together: close in time, within `max_span`."""
    breaks = np.flatnonzero(np.diff(times) > join_gap) + 1
    bounds = np.concatenate([[0], breaks, [len(times)]])
    for first, stop in zip(bounds[:-1], bounds[1:]):
        while first < stop:
            last = int(np.searchsorted(times, times[first] + max_span - length, side="right"))
            last = min(max(last, first + 1), stop)
            yield int(first), last
            first = last


def _read_padded(recording: Recording, start: int, stop: int, channels: np.ndarray) -> np.ndarray:
    """(stop - start, len(channels)) traces, zero where [start, stop) leaves the recording."""
    block = np.zeros((stop - start, len(channels)), dtype=np.float32)
    read_start, read_stop = max(start, 0), min(stop, recording.n_samples)
    if read_stop > read_start:
        block[read_start - start : read_stop - start] = recording.get_traces(read_start, read_stop, channels)
    return block


def mean_template(sorting: Sorting, spike_indices: np.ndarray) -> np.ndarray:
    """(n_taps, n_channels) spike-weighted mean of the sort's templates of these spikes.

    The shape of a curated unit without re-reading the data: a merge is the
    mean of its parents' templates, a piece of a split its parent's.
    """
    counts = np.bincount(sorting.spike_units[spike_indices], minlength=sorting.n_units)
    # Only the templates that carry weight: a unit is one or a few of hundreds (at 384 channels
    # the whole sum cost 10-20 ms on the GUI thread per selection).
    present = np.flatnonzero(counts)
    if len(present) == 0:
        return np.zeros(sorting.templates.shape[1:], dtype=np.float32)
    return template_mix(counts[present] / counts[present].sum(), sorting.templates[present])


def best_channels(template: np.ndarray, n_channels: int) -> np.ndarray:
    """(min(n_channels, available),) channels of `template` (n_taps, channels), largest peak-to-peak first."""
    return np.argsort(-np.ptp(template, axis=0), kind="stable")[:n_channels]


class SpikeFeatureExtractor:
    """Waveform PCs on each spike's best channels, plus its amplitude, in one shared low-dimensional space.

    Parameters are set here; `fit` learns `temporal_basis_` (length, n_temporal)
    from the snippets, `channels_` (n_templates, k) the best channels of each
    of the sort's templates, and `mean_`, `components_` (n_components, D) the
    principal axes of the shared space. `transform` maps any spikes there.
    """

    def __init__(
        self,
        n_components: int = 10,
        n_temporal_components: int = 3,
        n_channels_per_spike: int = 4,
        before_ms: float = SNIPPET_BEFORE_MS,
        after_ms: float = SNIPPET_AFTER_MS,
        max_fit_spikes: int = 30_000,
        seed: int = 0,
    ) -> None:
        self.n_components = n_components
        self.n_temporal_components = n_temporal_components
        self.n_channels_per_spike = n_channels_per_spike
        self.before_ms = before_ms
        self.after_ms = after_ms
        self.max_fit_spikes = max_fit_spikes
        self.seed = seed

    def fit(self, recording, sorting, spike_indices, progress=None, should_stop=None) -> SpikeFeatureExtractor:
        self._fit(recording, sorting, np.asarray(spike_indices, dtype=np.int64), progress, should_stop)
        return self

    def fit_transform(self, recording, sorting, spike_indices, progress=None, should_stop=None) -> np.ndarray:
        """(n, n_components_) float32 features of `spike_indices`; each snippet read once when n ≤ max_fit_spikes."""
        spike_indices = np.asarray(spike_indices, dtype=np.int64)
        fitted_on_all = len(spike_indices) <= self.max_fit_spikes
        fit_share = 1.0 if fitted_on_all else 0.5  # of the reading, which is most of the work
        fit_progress, transform_progress = progress_part(progress, 0, fit_share), progress_part(progress, fit_share, 1)
        values, columns = self._fit(recording, sorting, spike_indices, fit_progress, should_stop)
        if fitted_on_all:
            return self._project(values, columns)
        return self.transform(recording, sorting, spike_indices, transform_progress, should_stop)

    def transform(self, recording, sorting, spike_indices, progress=None, should_stop=None) -> np.ndarray:
        """(n, n_components_) float32 features of `spike_indices` in the fitted space."""
        spike_indices = np.asarray(spike_indices, dtype=np.int64)
        features = np.zeros((len(spike_indices), self.n_components_), dtype=np.float32)
        n_batches = max(-(-len(spike_indices) // TRANSFORM_BATCH), 1)
        for batch in range(n_batches):
            chosen = slice(batch * TRANSFORM_BATCH, (batch + 1) * TRANSFORM_BATCH)
            batch_progress = progress_part(progress, batch / n_batches, (batch + 1) / n_batches)
            snippets = self._snippets(recording, sorting, spike_indices[chosen], batch_progress, should_stop)
            values, columns = self._shared_space(sorting, spike_indices[chosen], snippets)
            features[chosen] = self._project(values, columns)
        return features

    # ---- fitting -------------------------------------------------------------------------------
    def _fit(self, recording, sorting, spike_indices, progress, should_stop):
        """Learn everything from (a sample of) the spikes; returns that sample's shared-space rows."""
        if len(spike_indices) == 0:
            raise ValueError("no spikes to learn features from")
        rng = np.random.default_rng(self.seed)
        fit_indices = spike_indices
        if len(fit_indices) > self.max_fit_spikes:
            fit_indices = np.sort(rng.choice(spike_indices, self.max_fit_spikes, replace=False))
        k = min(self.n_channels_per_spike, sorting.n_channels)
        self.channels_ = np.zeros((sorting.n_units, k), dtype=np.int64)  # (n_templates, k)
        for template, channels in zip(sorting.templates, self.channels_):
            channels[:] = best_channels(template, k)
        self.before_, self.after_ = snippet_window(sorting.sampling_rate, self.before_ms, self.after_ms)
        snippets = self._snippets(recording, sorting, fit_indices, progress, should_stop)  # (n, length, k)
        self.temporal_basis_ = _temporal_basis(snippets, self.n_temporal_components)
        local = np.einsum("nlk,lt->nkt", snippets, self.temporal_basis_)  # (n, k, n_temporal)
        # The amplitude column weighs like the strongest component on the main channel.
        amplitudes = sorting.amplitudes[fit_indices].astype(np.float64)
        self.amplitude_scale_ = float(np.std(local[:, 0, 0]) / max(np.std(amplitudes), 1e-12)) or 1.0
        values, columns = self._shared_space(sorting, fit_indices, snippets, local)
        self.n_dimensions_ = sorting.n_channels * self.temporal_basis_.shape[1] + 1
        self.mean_, self.components_ = _sparse_pca(values, columns, self.n_dimensions_, self.n_components)
        self.n_components_ = len(self.components_)
        return values, columns

    def _snippets(self, recording, sorting, spike_indices, progress, should_stop) -> np.ndarray:
        channels = self.channels_[sorting.spike_units[spike_indices]]  # (n, k)
        return read_snippets(
            recording, sorting.spike_times[spike_indices], channels, self.before_, self.after_,
            progress=progress, should_stop=should_stop,
        )

    def _shared_space(self, sorting, spike_indices, snippets, local=None):
        """Each spike's non-zero entries in the shared space: values (n, m) float64, columns (n, m) int64."""
        if local is None:
            local = np.einsum("nlk,lt->nkt", snippets, self.temporal_basis_)
        n, k, n_temporal = local.shape
        channels = self.channels_[sorting.spike_units[spike_indices]]  # (n, k)
        pc_columns = (channels[:, :, None] * n_temporal + np.arange(n_temporal)).reshape(n, k * n_temporal)
        amplitude_column = np.full((n, 1), sorting.n_channels * n_temporal)
        columns = np.concatenate([pc_columns, amplitude_column], axis=1)
        amplitudes = sorting.amplitudes[spike_indices].astype(np.float64)[:, None] * self.amplitude_scale_
        values = np.concatenate([local.reshape(n, -1).astype(np.float64), amplitudes], axis=1)
        return values, columns

    def _project(self, values: np.ndarray, columns: np.ndarray) -> np.ndarray:
        # (x - mean) @ Vᵀ with x sparse: gather the axes' entries at each spike's columns.
        projected = np.einsum("nm,nmc->nc", values, self.components_.T[columns]) - self.mean_ @ self.components_.T
        return projected.astype(np.float32)


def _temporal_basis(snippets: np.ndarray, n_components: int, max_rows: int = 20_000) -> np.ndarray:
    """(length, n) leading right singular vectors of every channel's snippet, as Kilosort's wPCA."""
    rows = snippets.transpose(0, 2, 1).reshape(-1, snippets.shape[1])  # (n * k, length)
    if len(rows) > max_rows:
        rows = rows[np.linspace(0, len(rows) - 1, max_rows).astype(np.int64)]
    rows = rows.astype(np.float64)
    _, _, vt = np.linalg.svd(rows, full_matrices=False)
    basis = vt[:n_components].T  # (length, n)
    # A singular vector's sign is arbitrary: fix it so the mean projection is
    # positive, and the same data always gives the same features.
    basis *= np.where((rows @ basis).sum(axis=0) < 0, -1.0, 1.0)
    return basis


def _sparse_pca(values: np.ndarray, columns: np.ndarray, n_dimensions: int, n_components: int):
    """Mean (D,) and principal axes (n, D) of rows given by their non-zero (column, value) pairs.

    The covariance is accumulated entry by entry, so the dense (n_rows, D)
    matrix (D = channels × components, large on big probes) is never built.
    """
    n_rows = len(values)
    mean = np.bincount(columns.ravel(), weights=values.ravel(), minlength=n_dimensions) / n_rows
    second_moment = np.zeros(n_dimensions**2)
    for start in range(0, n_rows, PCA_BATCH):
        batch_columns, batch_values = columns[start : start + PCA_BATCH], values[start : start + PCA_BATCH]
        pair_index = (batch_columns[:, :, None] * n_dimensions + batch_columns[:, None, :]).ravel()
        pair_value = (batch_values[:, :, None] * batch_values[:, None, :]).ravel()
        second_moment += np.bincount(pair_index, weights=pair_value, minlength=n_dimensions**2)
    covariance = second_moment.reshape(n_dimensions, n_dimensions) / n_rows - np.outer(mean, mean)
    # Only the leading axes: at 384 channels D is 1153, and the full decomposition took 15 s.
    first = max(n_dimensions - n_components, 0)
    eigenvalues, eigenvectors = scipy.linalg.eigh(covariance, subset_by_index=[first, n_dimensions - 1])
    keep = min(n_components, int(np.count_nonzero(eigenvalues > 1e-9 * max(eigenvalues.max(), 1e-30))))
    order = np.argsort(eigenvalues)[::-1][: max(keep, 1)]
    return mean, eigenvectors[:, order].T


def progress_part(progress: Progress | None, start: float, stop: float) -> Progress | None:
    """Report progress of a sub-task as the [start, stop] part of the whole."""
    if progress is None:
        return None
    return lambda fraction: progress(start + (stop - start) * fraction)
