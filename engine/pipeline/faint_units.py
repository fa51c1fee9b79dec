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

A neuron need not be faint to be missed: on SpikeInterface's drifting 384-channel probe (60 s,
neurons at 2-8 Hz), three neurons of 5-7 σ firing at 2 Hz had no filter (the pool held ~24 of
their spikes) and no unit, and their peaks in the searched 20 s, ~40 shared by two or three
channels, were as many as the noise's 4 σ peaks on each: no channel's count stood out. Noise
seldom reaches 5 σ (FAINT_STRONG_THRESHOLD), and they do: a channel's peaks that deep count on
their own (FAINT_MIN_STRONG_SPIKES, with their own noise excess), and their mean is the
candidate. Found, the three were sorted at 1.00, 0.95 and 1.00 (the sort 0.824 -> 0.853).

The pieces are batches of the sort's own inference (the same chunks, coded by the same
ChunkSpikeFinder with the same settings), so that when no candidate is kept the sort's
inference takes their spikes as they are (`FaintSearch.coded`) instead of coding them again:
on a 32-channel probe the search codes a fifth of a 5-minute recording.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from engine.cpu import adapt_threads, in_order, single_thread
from engine.io.recording import Recording
from engine.model.pairs import pairs_in_runs
from engine.model.similarity import corrected_similarity, mean_reliability, shift_invariant_similarity
from engine.pipeline.explain_away import subtract_filters
from engine.pipeline.inference import (BATCH_CHUNKS, ChunkSpikeFinder, SpikeEvents, SpikeSettings, chunk_batches,
                                      default_chunk_size)
from engine.pipeline.pruning import PruneDecision
from engine.pipeline.refinement import AmplitudePrior
from engine.pipeline.initialization import detect_peaks_on_probe
from engine.pipeline.params import (DUPLICATE_SIMILARITY, FAINT_MAX_SECONDS, FAINT_MAX_VALUES, FAINT_MIN_POOL_SPIKES,
                                    FAINT_MIN_SPIKES, FAINT_NOISE_EXCESS_Z, FAINT_PART_CHUNKS, FAINT_SNIPPET_CHANNELS,
                                    FAINT_SNIPPETS_PER_CHANNEL, FAINT_STRONG_THRESHOLD, FAINT_MIN_STRONG_SPIKES,
                                    FAINT_STRONG_NOISE_EXCESS_Z, FAINT_THRESHOLD, PEAK_FRACTION, SHADOW_WINDOW_MS)
from engine.pipeline.sorting import peak_taps
from engine.pipeline.stages import SortStopped


def discovery_batches(batches: list[list[tuple[int, int]]], n_channels: int, sampling_rate: float,
                      max_values: int = FAINT_MAX_VALUES, max_seconds: float = FAINT_MAX_SECONDS) -> list[int]:
    """Which of the sort's inference `batches` (inference.chunk_batches) the search codes: spread evenly
    over the recording, first to last, as many as cover `max_values` channels × samples and `max_seconds`
    (rounded up to whole batches; every batch when the recording is smaller)."""
    if not batches:
        return []
    budget = min(max_values // max(n_channels, 1), int(max_seconds * sampling_rate))
    batch_samples = max(sum(b - a for a, b in batches[0]), 1)
    wanted = min(len(batches), max(1, -(-budget // batch_samples)))
    return sorted(set(np.linspace(0, len(batches) - 1, wanted).round().astype(int).tolist()))


def searched_batches(recording: Recording, n_taps: int, max_values: int = FAINT_MAX_VALUES,
                     ) -> tuple[list[list[tuple[int, int]]], list[int]]:
    """(the sort's inference batches of `recording`, as infer_spikes cuts them by default; the indices of
    those the search codes, `discovery_batches`)."""
    batches = chunk_batches(recording.n_samples, default_chunk_size(recording, n_taps), BATCH_CHUNKS)
    return batches, discovery_batches(batches, recording.n_channels, float(recording.sampling_rate), max_values)


def search_parts(cores: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """A searched batch's chunks (`cores`) in the parts coded at once: FAINT_PART_CHUNKS each, a lone last
    chunk joined to the part before it (alone, a short last chunk of the recording would be padded to its
    own length rather than the batch's, and could be coded differently from the sort's inference)."""
    parts = [cores[i : i + FAINT_PART_CHUNKS] for i in range(0, len(cores), FAINT_PART_CHUNKS)]
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2:] = [parts[-2] + parts[-1]]
    return parts


def found_filters_kept(decision: PruneDecision, n_before: int) -> tuple[list[int], list[int]]:
    """(the found filters kept, the old filters they replace) by `decision`, pruning's judgement of the
    dictionary with the candidates appended after its first `n_before` filters: a candidate is kept when it
    survives pruning with FAINT_MIN_POOL_SPIKES of the pool or more.

    A found filter can fit a neuron better than the old filter that coded it poorly and take its spikes:
    the old one, idle now by pruning's own rule, goes. Kept, the lasso splits the neuron's spikes between
    the two, often each share under its bar and too unalike (under SPLIT_SHARE_SIMILARITY) to be pooled.
    Measured on SpikeInterface's 32-channel probe, recording seed 7: the search found the 3.8-SNR gt2 a
    filter 0.79 alike the old one, which then won 20 pool events (the idle bar: 34); of gt2's 447 missed
    spikes 445 had no event of its filter, though the recording fitted them at 0.79-1.08 of its size. With
    the old filter gone, gt2 0.889 -> 0.923 and the sort 0.9880 -> 0.9895; seeds 0-6 lost no old filter
    (the same sorts). An old filter idle beside no kept candidate stays (the dictionary is then as it was)."""
    survivors = set(decision.keep.tolist())
    n_filters = len(decision.counts)
    kept = [k for k in range(n_before, n_filters)
            if k in survivors and decision.counts[k] >= FAINT_MIN_POOL_SPIKES]
    replaced = [int(k) for k in decision.idle if k < n_before] if kept else []
    return kept, sorted(replaced)


class _SnippetStore:
    """Each channel's residual snippets (on its FAINT_SNIPPET_CHANNELS nearest channels), at most
    FAINT_SNIPPETS_PER_CHANNEL a channel, and as many again of its strong peaks' (FAINT_STRONG_THRESHOLD):
    384 channels × 400 × 8 × 120 float32 is 590 MB at most, whatever the recording's length (strong
    peaks are rare: 8 MB on SpikeInterface's 384-channel probe)."""

    def __init__(self, positions: np.ndarray, neighbourhoods: np.ndarray, n_taps: int) -> None:
        n_channels = len(neighbourhoods)
        distance = np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=2)
        self.near = []  # per channel: its nearest channels within its neighbourhood, itself first
        for channel in range(n_channels):
            inside = np.flatnonzero(neighbourhoods[channel])
            self.near.append(inside[np.argsort(distance[channel, inside], kind="stable")][:FAINT_SNIPPET_CHANNELS])
        self.n_taps = n_taps
        # Each channel's snippets of every peak, and of its strong peaks only.
        self.every = _Snippets(n_channels)
        self.strong = _Snippets(n_channels)

    def cut(self, residual: np.ndarray, starts: np.ndarray, channels: np.ndarray, strong: np.ndarray,
            ) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(channel, (n, n_near, n_taps) snippets, those of its strong peaks) of each channel's peaks
        starting at `starts` in `residual` (`strong`: bool, each peak's), at most FAINT_SNIPPETS_PER_CHANNEL
        of each a channel: what `add` keeps, cut where the residual is (a search worker), so that only the
        snippets travel."""
        offsets = np.arange(self.n_taps)
        near_of = self.near

        def snippets(channel: int, at: np.ndarray) -> np.ndarray:
            near = near_of[channel]
            return residual[near[:, None, None], (at[:, None] + offsets[None, :])[None]].transpose(1, 0, 2)

        cuts = []
        for channel in np.unique(channels):
            mine = channels == channel
            cuts.append((int(channel), snippets(channel, starts[mine][:FAINT_SNIPPETS_PER_CHANNEL]),
                         snippets(channel, starts[mine & strong][:FAINT_SNIPPETS_PER_CHANNEL])))
        return cuts

    def add(self, cuts: list[tuple[int, np.ndarray, np.ndarray]], negative: tuple[np.ndarray, np.ndarray],
            positive: tuple[np.ndarray, np.ndarray]) -> None:
        """Keep each channel's snippets until it holds FAINT_SNIPPETS_PER_CHANNEL (the first ones added), and
        count every peak found (`negative`, `positive`: the channels of each, and whether each is strong)."""
        (negative, strong_negative), (positive, strong_positive) = negative, positive
        self.every.count(negative, positive)
        self.strong.count(negative[strong_negative], positive[strong_positive])
        for channel, every, strong in cuts:
            self.every.keep(channel, every)
            self.strong.keep(channel, strong)


class _Snippets:
    """One kind of peak's snippets, each channel's first FAINT_SNIPPETS_PER_CHANNEL, and the count of every
    such peak found on each channel, negative and (the noise's mirror image) positive."""

    def __init__(self, n_channels: int) -> None:
        self.parts: list[list[np.ndarray]] = [[] for _ in range(n_channels)]
        self.counts = np.zeros(n_channels, dtype=np.int64)  # snippets kept
        self.negative = np.zeros(n_channels, dtype=np.int64)
        self.positive = np.zeros(n_channels, dtype=np.int64)

    def count(self, negative: np.ndarray, positive: np.ndarray) -> None:
        self.negative += np.bincount(negative, minlength=len(self.negative))
        self.positive += np.bincount(positive, minlength=len(self.positive))

    def keep(self, channel: int, snippets: np.ndarray) -> None:
        room = FAINT_SNIPPETS_PER_CHANNEL - self.counts[channel]
        if room > 0 and len(snippets):
            self.parts[channel].append(snippets[:room])
            self.counts[channel] += min(room, len(snippets))

    def of(self, channel: int) -> np.ndarray:
        return np.concatenate(self.parts[channel])

    def unlike_noise(self, min_spikes: int, min_excess: float) -> np.ndarray:
        """(n_channels,) bool: the channels with `min_spikes` snippets or more whose negative peaks outnumber
        what noise gives by `min_excess` or more (`noise_excess`)."""
        return (self.counts >= min_spikes) & (noise_excess(self.negative, self.positive) >= min_excess)


def noise_excess(negative: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """How many standard deviations a channel's count of unexplained negative peaks exceeds its count of
    positive ones: (n₋ − n₊) / √(n₋ + n₊), the counts' difference over its Poisson spread.

    Noise crosses −4 σ as often as +4 σ, so the positive peaks of the residual (away from coded spikes, as
    the negative ones) count the negative peaks noise alone gives; a neuron adds troughs only. Without this
    the search made a candidate of noise on every channel of the simulator's 60-s probes (n₋ ≈ n₊ ≈ 60-80
    a channel, FAINT_MIN_SPIKES 30) and kept it: 10 neurons sorted into 29-42 units."""
    negative, positive = np.asarray(negative, dtype=np.float64), np.asarray(positive, dtype=np.float64)
    return (negative - positive) / np.sqrt(np.maximum(negative + positive, 1.0))


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


@dataclass
class FaintSearch:
    candidates: np.ndarray  # (n_candidates, n_channels, n_taps) unit-norm filters, biggest clusters first
    # The spikes of the batches the search coded, by batch index (as ChunkSpikeFinder.batch_spikes gives
    # them, one SpikeEvents a chunk), and the settings that coded them: the sort's inference may take them
    # as they are while its dictionary and settings are these (inference.infer_spikes, `known`).
    coded: dict[int, list[SpikeEvents]]
    settings: SpikeSettings


def faint_candidates(
    recording: Recording,
    noise_levels: np.ndarray,
    model,
    lambdas: float | np.ndarray,
    dead_time: int,
    neighbourhoods: np.ndarray,
    solver: str = "auto",
    prior: AmplitudePrior | None = None,
    max_values: int = FAINT_MAX_VALUES,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FaintSearch:
    """Candidate filters for neurons the dictionary of `model` leaves unexplained (see the module's
    docstring), and the spikes of the batches searched.

    recording: preprocessed; noise_levels: its (n_channels,) σ; lambdas: the smallest spike amplitude,
    or each filter's (n_filters,) (the model's λ, as the sort reads spikes); `prior`: the sort's
    amplitude prior (inference.infer_spikes), so that the batches are coded as the sort codes them."""
    filters = model.filters.detach().cpu().numpy()  # (n_filters, n_channels, n_taps)
    n_filters, n_channels, n_taps = filters.shape
    filter_channels = model.channel_mask.detach().cpu().numpy() > 0
    peak_tap = int(PEAK_FRACTION * n_taps)
    sampling_rate = float(recording.sampling_rate)
    window = max(int(round(SHADOW_WINDOW_MS * 1e-3 * sampling_rate)), 1)
    store = _SnippetStore(np.asarray(recording.channel_positions, dtype=np.float64), neighbourhoods, n_taps)
    # The sort's own batches and spike finder: what they code here is what its inference would code.
    batches, searched = searched_batches(recording, n_taps, max_values)
    settings = SpikeSettings.of(model, noise_levels, dead_time, lambdas, prior, solver)
    finder = ChunkSpikeFinder(settings, model)
    filter_peaks = peak_taps(filters.transpose(0, 2, 1))  # (n_filters,) where each event's time sits in its filter

    workers = adapt_threads() if finder.working_set is not None else 1

    def coded_part(cores: list[tuple[int, int]]) -> list[tuple[SpikeEvents, int, np.ndarray]] | None:
        """(spikes, window start, signal as read) of each chunk of part of a batch; None once the sort is stopped."""
        if should_stop is not None and should_stop():
            return None
        return finder.batch_spikes_and_signals(recording, cores)

    def unexplained_in(cores: list[tuple[int, int]], coded: list[tuple[SpikeEvents, int, np.ndarray]]
                       ) -> tuple[list[tuple[int, np.ndarray]], np.ndarray, np.ndarray]:
        """The snippets of the unexplained peaks of a batch (`cores`), from its chunks' spikes and signals,
        and the channels of every unexplained negative and positive peak (_SnippetStore.add)."""
        events = SpikeEvents.concatenate([chunk[0] for chunk in coded])
        code_index = events.times - filter_peaks[events.filters]
        # Spikes of the batches on either side were not coded here: their atoms reach a filter length in.
        first = cores[0][0] + (n_taps if cores[0][0] > 0 else 0)
        last = cores[-1][1] - (n_taps if cores[-1][1] < recording.n_samples else 0)

        def cuts_of(chunk: int) -> list[tuple[int, np.ndarray]]:
            # Chunk by chunk (a 384-channel batch's residual would be 370 MB), on the signal the finder read
            # (reading it again band-passed it again: the search took 9.5 s instead of 5.3 s on 32 channels).
            (core_start, core_stop), (_, window_start, read) = cores[chunk], coded[chunk]
            start, stop = max(core_start - n_taps, 0), min(core_stop + n_taps, recording.n_samples)
            signal = read[:, start - window_start : stop - window_start]
            near = (code_index > start - n_taps) & (code_index < stop)  # the neighbouring chunks' spikes too
            residual = subtract_filters(signal, code_index[near] - start, events.amplitudes[near], filters,
                                        events.filters[near])
            nearby = SpikeEvents(events.times[near] - start, events.filters[near], events.amplitudes[near])

            def peaks(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                times, channels = unexplained_peaks(signal, nearby, filter_channels, FAINT_THRESHOLD,
                                                    max(n_taps // 4, 1), window, neighbourhoods)
                absolute = times + start
                inside = ((absolute >= max(core_start, first)) & (absolute < min(core_stop, last))
                          & (times - peak_tap >= 0) & (times - peak_tap + n_taps <= residual.shape[1]))
                return times[inside], channels[inside]

            times, channels = peaks(residual)
            strong = residual[channels, times] <= -FAINT_STRONG_THRESHOLD
            mirror_times, mirrored = peaks(-residual)  # the positive peaks: what noise alone gives (noise_excess)
            mirrored_strong = residual[mirrored, mirror_times] >= FAINT_STRONG_THRESHOLD
            return (store.cut(residual, times - peak_tap, channels, strong), (channels, strong),
                    (mirrored, mirrored_strong))

        found = list(in_order(cuts_of, list(range(len(cores))), workers))
        return ([cut for cuts, _, _ in found for cut in cuts],
                tuple(np.concatenate(column) for column in zip(*(negative for _, negative, _ in found))),
                tuple(np.concatenate(column) for column in zip(*(positive for _, _, positive in found))))

    # Each searched batch is coded in parts of a few chunks, a part per free core (in a thread with one torch
    # thread, as inference runs its batches: inference.spikes_of_batches says why), then its residual is
    # searched chunk by chunk, each chunk beside its neighbours' spikes. A chunk's codes are the same in a
    # part as in the whole batch (each part padded as the batch is), and searching batch by batch spreads
    # a 384-channel probe's 3 batches over both cores (they were coded a batch per core, the third alone).
    # Snippets are stored in order, so those kept (the first FAINT_SNIPPETS_PER_CHANNEL a channel) do not
    # depend on which part finished first.
    coded: dict[int, list[SpikeEvents]] = {}
    with single_thread() if workers > 1 else contextlib.nullcontext():
        for done, index in enumerate(searched):
            cores = batches[index]
            # On a GPU the batch is one tensor, coded at once.
            parts = list(in_order(coded_part, search_parts(cores) if finder.working_set is not None else [cores],
                                  workers))
            if any(part is None for part in parts) or (should_stop is not None and should_stop()):
                raise SortStopped("stopped while looking for faint units")
            chunks = [chunk for part in parts for chunk in part]
            coded[index] = [chunk[0] for chunk in chunks]
            store.add(*unexplained_in(cores, chunks))
            if progress is not None:
                progress((done + 1) / len(searched))
    return FaintSearch(_cluster_candidates(store, filters), coded, settings)


# A candidate's mean may be mostly noise and still be compared (its noise energy up to 99.9 % of its norm²).
_FAINT_RELIABILITY_FLOOR = float(np.sqrt(1e-3))


def _cluster_candidates(store: _SnippetStore, filters: np.ndarray) -> np.ndarray:
    """Each channel's snippets, when FAINT_MIN_SPIKES or more and its peaks more than noise gives
    (_SnippetStore.unlike_noise), give their mean as a candidate, unless it is
    a duplicate of a filter or of a bigger candidate. One mean a channel: k-means into two a channel
    split one neuron's peaks between two candidates (384 channels, sorter seed 0: 0.9035, one: 0.9044).

    The mean of a few hundred 3 σ spikes still holds noise (each value's spread over the count):
    two halves of one faint neuron were 0.91 alike, under any duplicate bar. The noise is taken out
    of each mean's norm before comparing (engine.model.similarity.corrected_similarity), as the unit merge
    does (engine/pipeline/unit_merge.py)."""
    n_filters, n_channels, n_taps = filters.shape
    means, sizes, reliabilities = [], [], []
    by_every = store.every.unlike_noise(FAINT_MIN_SPIKES, FAINT_NOISE_EXCESS_Z)
    # Deep peaks count only where no channel near counts every peak: there they are that channel's neuron
    # seen from beside it (SpikeInterface's drifting 48-channel probe, recording seed 1: channel 1's peaks
    # made a faint neuron's candidate, channel 0's deep ones a second, 0.87 alike; both kept, they shared
    # its spikes and the sort went 0.930 -> 0.919).
    beside_every = np.array([by_every[near].any() for near in store.near], dtype=bool)
    by_strong = store.strong.unlike_noise(FAINT_MIN_STRONG_SPIKES, FAINT_STRONG_NOISE_EXCESS_Z) & ~beside_every
    for channel in np.flatnonzero(by_every | by_strong):
        snippets = store.every.of(int(channel)) if by_every[channel] else store.strong.of(int(channel))
        mean = np.zeros((n_channels, n_taps), dtype=np.float32)
        mean[store.near[channel]] = snippets.mean(axis=0)
        means.append(mean)
        sizes.append(len(snippets))
        reliabilities.append(mean_reliability(snippets, floor=_FAINT_RELIABILITY_FLOOR))
    if not means:
        return np.zeros((0, n_channels, n_taps), dtype=np.float32)
    order = np.argsort(-np.asarray(sizes), kind="stable")
    candidates = np.stack([means[i] for i in order])
    # Similarity rescaled to what it would be without the means' noise (the filters have none).
    everything = np.concatenate([filters, candidates]).transpose(0, 2, 1)
    similarity = corrected_similarity(shift_invariant_similarity(everything),
                                      np.concatenate([np.ones(n_filters), np.asarray(reliabilities)[order]]))
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
