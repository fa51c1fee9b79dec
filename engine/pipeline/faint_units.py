"""Neurons too faint for the first dictionary, found in what the learned dictionary leaves unexplained.

The initial dictionary clusters 5 σ threshold crossings of the training pool. A neuron whose
spikes peak at 2.5-3.5 σ crosses that bar on a few spikes in a hundred, and on a 384-channel
probe the pool is 4 s long: such a neuron never gets a filter, and no later stage can give it
one. Given a filter, the lasso codes it well. Measured on SpikeInterface's 384-channel probe
(60 s, sorter seed 0), each missing neuron's mean spike added to the final dictionary: units of
SNR 2.7, 3.0 and 2.6 were sorted at 0.86, 0.73 and 0.72 accuracy (mean 0.892 -> 0.913).

So, once the dictionary is learned, pieces of the recording spread over its length are coded
with it, and the residual (the recording less what the codes explain) is searched for
negative peaks at FAINT_THRESHOLD σ, away from every coded spike on the same channels (the
residue of a big spike's imperfect fit is not a neuron). The snippets of each channel's
peaks, when FAINT_MIN_SPIKES or more, give their mean; a mean unlike every filter becomes a
candidate filter. SortPipeline keeps a candidate only if it then codes enough of the
training pool (pure-noise clusters code next to nothing at λ).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np

from engine.cpu import adapt_threads, in_order, single_thread
from engine.io.recording import NumpyRecording, Recording
from engine.model.pairs import pairs_in_runs
from engine.model.similarity import shift_invariant_similarity
from engine.pipeline.explain_away import place_filters
from engine.pipeline.inference import (BATCH_CHUNKS, ChunkSpikeFinder, SpikeEvents, SpikeSettings, chunk_batches,
                                      default_chunk_size)
from engine.pipeline.initialization import detect_peaks_on_probe
from engine.pipeline.params import (DUPLICATE_SIMILARITY, FAINT_MAX_SECONDS, FAINT_MAX_VALUES, FAINT_MIN_SPIKES,
                                    FAINT_SNIPPET_CHANNELS, FAINT_SNIPPETS_PER_CHANNEL, FAINT_THRESHOLD,
                                    PEAK_FRACTION, POOL_PIECE_S, SHADOW_WINDOW_MS)
from engine.pipeline.pool import spread_pieces
from engine.pipeline.sorting import peak_taps
from engine.pipeline.stages import SortStopped


def discovery_pieces(n_samples: int, n_channels: int, sampling_rate: float, n_taps: int,
                     max_values: int = FAINT_MAX_VALUES, max_seconds: float = FAINT_MAX_SECONDS,
                     ) -> list[tuple[int, int]]:
    """(start, stop) pieces of POOL_PIECE_S spread evenly over the recording, at most `max_values`
    channels × samples and `max_seconds` in all (the whole recording when it is smaller)."""
    budget = max(min(max_values // n_channels, int(max_seconds * sampling_rate)), n_taps)
    return spread_pieces(n_samples, budget, max(int(POOL_PIECE_S * sampling_rate), 4 * n_taps))


class _SnippetStore:
    """Each channel's residual snippets (on its FAINT_SNIPPET_CHANNELS nearest channels), at most
    FAINT_SNIPPETS_PER_CHANNEL a channel: 384 channels × 200 × 8 × 120 float32 is 295 MB at most,
    whatever the recording's length."""

    def __init__(self, positions: np.ndarray, neighbourhoods: np.ndarray, n_taps: int) -> None:
        n_channels = len(neighbourhoods)
        distance = np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=2)
        self.near = []  # per channel: its nearest channels within its neighbourhood, itself first
        for channel in range(n_channels):
            inside = np.flatnonzero(neighbourhoods[channel])
            self.near.append(inside[np.argsort(distance[channel, inside], kind="stable")][:FAINT_SNIPPET_CHANNELS])
        self.n_taps = n_taps
        self.parts: list[list[np.ndarray]] = [[] for _ in range(n_channels)]
        self.counts = np.zeros(n_channels, dtype=np.int64)

    def add(self, residual: np.ndarray, starts: np.ndarray, channels: np.ndarray) -> None:
        offsets = np.arange(self.n_taps)
        for channel in np.unique(channels):
            room = FAINT_SNIPPETS_PER_CHANNEL - self.counts[channel]
            if room <= 0:
                continue
            mine = starts[channels == channel][:room]
            near = self.near[channel]
            snippets = residual[near[:, None, None], (mine[:, None] + offsets[None, :])[None]]
            self.parts[channel].append(snippets.transpose(1, 0, 2))  # (n, n_near, n_taps)
            self.counts[channel] += len(mine)

    def snippets(self, channel: int) -> np.ndarray:
        return np.concatenate(self.parts[channel]) if self.parts[channel] else np.zeros((0, 0, self.n_taps))


def unexplained_peaks(residual: np.ndarray, events: SpikeEvents, filter_channels: np.ndarray, threshold: float,
                      dead_time: int, window: int, neighbourhoods: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(times, channels) of the residual's negative peaks below -threshold that no coded spike
    within `window` samples touches on the same channel (filter_channels: (n_filters, n_channels) bool)."""
    times, channels = detect_peaks_on_probe(residual, threshold, dead_time, neighbourhoods)
    if times.size == 0 or len(events) == 0:
        return times, channels
    order = np.argsort(events.times, kind="stable")
    event_times, event_filters = events.times[order], events.filters[order]
    first = np.searchsorted(event_times, times - window, side="left")
    last = np.searchsorted(event_times, times + window, side="right")
    rows, columns = pairs_in_runs(first, last)
    touched = np.zeros(times.size, dtype=bool)
    touched[rows[filter_channels[event_filters[columns], channels[rows]]]] = True
    return times[~touched], channels[~touched]


def faint_candidates(
    recording: Recording,
    noise_levels: np.ndarray,
    model,
    lambdas: float | np.ndarray,
    dead_time: int,
    neighbourhoods: np.ndarray,
    solver: str = "auto",
    max_values: int = FAINT_MAX_VALUES,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """(n_candidates, n_channels, n_taps) unit-norm candidate filters for neurons the dictionary of
    `model` leaves unexplained (see the module's docstring), biggest clusters first.

    recording: preprocessed; noise_levels: its (n_channels,) σ; lambdas: the smallest spike amplitude,
    or each filter's (n_filters,) (the model's λ, as the sort reads spikes)."""
    filters = model.filters.detach().cpu().numpy()  # (n_filters, n_channels, n_taps)
    n_filters, n_channels, n_taps = filters.shape
    filter_channels = model.channel_mask.detach().cpu().numpy() > 0
    peak_tap = int(PEAK_FRACTION * n_taps)
    sampling_rate = float(recording.sampling_rate)
    window = max(int(round(SHADOW_WINDOW_MS * 1e-3 * sampling_rate)), 1)
    store = _SnippetStore(np.asarray(recording.channel_positions, dtype=np.float64), neighbourhoods, n_taps)
    pieces = discovery_pieces(recording.n_samples, n_channels, sampling_rate, n_taps, max_values)
    filter_peaks = peak_taps(filters.transpose(0, 2, 1))  # (n_filters,) where each event's time sits in its filter
    # One encoder (and Gram tensor) for every piece, as inference builds one for the recording.
    finder = ChunkSpikeFinder(SpikeSettings.of(model, np.ones(n_channels, np.float32), dead_time, lambdas,
                                               solver=solver), model)

    def unexplained(piece: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(residual, snippet starts, channels) of one piece: the recording less its coded spikes, and
        where its unexplained peaks' snippets start; None once the sort is stopped."""
        if should_stop is not None and should_stop():
            return None
        start, stop = piece
        signal = (recording.get_traces(start, stop).T / noise_levels[:, None]).astype(np.float32)
        coded = NumpyRecording(signal.T, sampling_rate)
        batches = chunk_batches(coded.n_samples, default_chunk_size(coded, n_taps), BATCH_CHUNKS)
        events = SpikeEvents.concatenate([part for cores in batches for part in finder.batch_spikes(coded, cores)])
        code_index = events.times - filter_peaks[events.filters]
        residual = signal - place_filters(signal.shape, code_index, events.amplitudes, filters, events.filters)
        times, channels = unexplained_peaks(residual, events, filter_channels, FAINT_THRESHOLD,
                                            max(n_taps // 4, 1), window, neighbourhoods)
        inside = (times - peak_tap >= 0) & (times - peak_tap + n_taps <= residual.shape[1])
        return residual, times[inside] - peak_tap, channels[inside]

    # Pieces are independent: each free core codes one, in a thread with one torch thread, as inference
    # runs its batches (inference.spikes_of_batches says why). They are stored in order, so the snippets
    # kept (the first FAINT_SNIPPETS_PER_CHANNEL a channel) do not depend on which piece finished first.
    workers = adapt_threads() if finder.working_set is not None else 1
    with single_thread() if workers > 1 else contextlib.nullcontext():
        for index, found in enumerate(in_order(unexplained, pieces, workers)):
            if found is None or (should_stop is not None and should_stop()):
                raise SortStopped("stopped while looking for faint units")
            store.add(*found)
            if progress is not None:
                progress((index + 1) / len(pieces))
    return _cluster_candidates(store, filters)


def _cluster_candidates(store: _SnippetStore, filters: np.ndarray) -> np.ndarray:
    """Each channel's snippets, when FAINT_MIN_SPIKES or more, give their mean as a candidate, unless it is
    a duplicate of a filter or of a bigger candidate. One mean a channel: k-means into two a channel
    split one neuron's peaks between two candidates (384 channels, sorter seed 0: 0.9035, one: 0.9044).

    The mean of a few hundred 3 σ spikes still holds noise (each value's spread over the count):
    two halves of one faint neuron were 0.91 alike, under any duplicate bar. The noise is taken out
    of each mean's norm before comparing, as the unit merge does (engine/pipeline/unit_merge.py)."""
    n_filters, n_channels, n_taps = filters.shape
    means, sizes, noise_energy = [], [], []
    for channel in np.flatnonzero(store.counts >= FAINT_MIN_SPIKES):
        snippets = store.snippets(int(channel))
        mean = np.zeros((n_channels, n_taps), dtype=np.float32)
        mean[store.near[channel]] = snippets.mean(axis=0)
        means.append(mean)
        sizes.append(len(snippets))
        noise_energy.append(float(snippets.reshape(len(snippets), -1).var(axis=0).sum() / len(snippets)))
    if not means:
        return np.zeros((0, n_channels, n_taps), dtype=np.float32)
    order = np.argsort(-np.asarray(sizes), kind="stable")
    candidates = np.stack([means[i] for i in order])
    energy = np.einsum("nct,nct->n", candidates, candidates)
    signal_energy = np.maximum(energy - np.asarray(noise_energy)[order], 1e-3 * energy)
    # Unit-norm similarity rescaled to what it would be without the means' noise (at most 1).
    filter_energy = np.einsum("nct,nct->n", filters, filters)
    raw_norms = np.sqrt(np.concatenate([filter_energy, energy]))
    clean_norms = np.sqrt(np.concatenate([filter_energy, signal_energy]))
    everything = np.concatenate([filters, candidates]).transpose(0, 2, 1)
    similarity = shift_invariant_similarity(everything) * np.outer(raw_norms, raw_norms)
    similarity = np.minimum(similarity / np.maximum(np.outer(clean_norms, clean_norms), 1e-12), 1.0)
    kept: list[int] = []
    for index in range(len(candidates)):
        row = similarity[n_filters + index]
        # Alike a filter: that neuron's spikes the codes missed or its fit's residue, not a new neuron.
        if row[:n_filters].max(initial=0.0) >= DUPLICATE_SIMILARITY:
            continue
        if any(row[n_filters + other] >= DUPLICATE_SIMILARITY for other in kept):
            continue
        kept.append(index)
    candidates = candidates[kept]
    candidates /= np.maximum(np.linalg.norm(candidates, axis=(1, 2)), 1e-12)[:, None, None]
    return candidates.astype(np.float32)
