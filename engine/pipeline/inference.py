"""Sparse coding of a whole recording, chunk by chunk, and spikes from the codes.

The recording is cut into chunks with overlapping margins (so no spike near a
chunk edge is lost or coded twice), a batch of chunks is encoded at once on
the model's device, and each chunk's codes are turned into spikes straight
away: no dense code for the whole recording is ever held in memory.

On a CPU the chunks are encoded by the working-set solver (engine/model/working_set.py):
the same FISTA, run only on the codes that can be non-zero, which is what
makes sorting on a laptop fast. GPUs run the dense encoder on batches of chunks.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from engine.cpu import adapt_threads, single_thread
from engine.model.crsae import CRsAE, select_device
from engine.io.recording import Recording
from engine.model.gram_rows import GramRows
from engine.model.local_peaks import local_maxima
from engine.pipeline.code_shares import CodeShares
from engine.pipeline.explain_away import eliminate_redundant_codes, eliminate_redundant_events, event_atoms
from engine.pipeline.refinement import AmplitudePrior, filters_sharing_channels, refine_spikes
from engine.pipeline.sorting import peak_taps
from engine.model.working_set import WorkingSetEncoder, gram_tensor, interacting_partners

# How chunks are encoded: "dense" runs the CRsAE encoder on every code sample;
# "working-set" the same FISTA on the codes that can be non-zero; "auto" picks
# the working set on a CPU and the dense encoder on a GPU.
SOLVERS = ("auto", "dense", "working-set")


def uses_working_set(solver: str, device: torch.device) -> bool:
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}: use one of {', '.join(SOLVERS)}")
    return device.type == "cpu" if solver == "auto" else solver == "working-set"


@dataclass
class SpikeEvents:
    times: np.ndarray  # (n,) int64 sample of the spike's extremum on its main channel
    filters: np.ndarray  # (n,) int32 filter that explains the spike
    amplitudes: np.ndarray  # (n,) float32 code amplitude (noise-σ units of a unit-norm filter)

    @classmethod
    def empty(cls) -> "SpikeEvents":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))

    @classmethod
    def concatenate(cls, parts: list["SpikeEvents"]) -> "SpikeEvents":
        if not parts:
            return cls.empty()
        times = np.concatenate([p.times for p in parts])
        order = np.argsort(times, kind="stable")
        return cls(
            times[order],
            np.concatenate([p.filters for p in parts])[order],
            np.concatenate([p.amplitudes for p in parts])[order],
        )

    def __len__(self) -> int:
        return len(self.times)


# Chunks encoded together as one batch (one sparse problem on the CPU, one tensor on a GPU).
BATCH_CHUNKS = 8


def default_chunk_size(recording: Recording, n_taps: int) -> int:
    """Core samples per chunk: one second, and at least 8 filter lengths."""
    return max(int(recording.sampling_rate), 8 * n_taps)


def chunk_batches(
    n_samples: int, chunk_size: int, batch_chunks: int, start: int = 0, stop: int | None = None,
) -> list[list[tuple[int, int]]]:
    """The cores [a, b) of the chunks covering [start, stop), grouped into batches encoded together.

    Every path that sorts a recording cuts it here, so the chunk boundaries, and
    with them the spikes, do not depend on how the batches are run.
    """
    stop = n_samples if stop is None else min(stop, n_samples)
    cores = [(s, min(s + chunk_size, stop)) for s in range(start, stop, chunk_size)]
    return [cores[i : i + batch_chunks] for i in range(0, len(cores), batch_chunks)]


def encode_batch(
    model: CRsAE,
    recording: Recording,
    scale: np.ndarray,
    batch_cores: list[tuple[int, int]],
    lipschitz: float,
    working_set: WorkingSetEncoder | None,
    with_correlation: bool = False,
) -> Iterator[tuple]:
    """Yield (core_start, core_stop, window_start, codes, signal, correlation) for each chunk of one batch.

    Each chunk is read with margins of two filter lengths each side: a code
    interacts with neighbours up to n_taps - 1 away, so the codes of the core
    do not depend on the chunk boundaries. The batch is encoded at once, by
    `working_set` when given, else by the model's dense encoder on its device.
    scale: (n_channels, 1) float32, 1 / noise σ. correlation: the signal's correlation with every
    filter, Hᵀy, shaped as the codes, when the working set computed it or `with_correlation`; else None.
    """
    margin = 2 * model.n_taps
    windows = [(max(a - margin, 0), min(b + margin, recording.n_samples)) for a, b in batch_cores]
    length = max(w1 - w0 for w0, w1 in windows)
    signal = np.zeros((len(windows), recording.n_channels, length), dtype=np.float32)
    for row, (w0, w1) in enumerate(windows):
        signal[row, :, : w1 - w0] = recording.get_traces(w0, w1).T * scale
    correlation = None
    if working_set is None:
        with torch.no_grad():
            on_device = torch.from_numpy(signal).to(model.filters.device)
            codes = model.encode(on_device, lipschitz=lipschitz).cpu().numpy()
            if with_correlation:
                correlation = model.analysis(on_device).cpu().numpy()
    else:
        codes, correlation = working_set.encode_with_correlation(signal)
    for row, ((a, b), (w0, w1)) in enumerate(zip(batch_cores, windows)):
        n_codes = max(w1 - w0 - model.n_taps + 1, 0)
        yield (a, b, w0, codes[row, :, :n_codes], signal[row, :, : w1 - w0],
               correlation[row, :, :n_codes] if correlation is not None else None)


def noise_scale(noise_levels: np.ndarray) -> np.ndarray:
    """(n_channels, 1) float32: what multiplies µV traces into noise-σ units."""
    return (1.0 / np.maximum(noise_levels, 1e-6)).astype(np.float32)[:, None]


def iter_code_chunks(
    model: CRsAE,
    recording: Recording,
    noise_levels: np.ndarray,
    chunk_size: int,
    batch_chunks: int = BATCH_CHUNKS,
    start: int = 0,
    stop: int | None = None,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    with_signal: bool = False,
    solver: str = "auto",
    working_set: WorkingSetEncoder | None = None,
) -> Iterator[tuple]:
    """Yield (core_start, core_stop, window_start, codes[, signal]) per chunk.

    codes: (n_filters, n_window - n_taps + 1) float32, code index i placing its
    filter on samples [window_start + i, window_start + i + n_taps); see
    `encode_batch` for the margins. With `with_signal`, also the
    noise-normalised signal, (n_channels, n_window) float32.
    `solver`: see SOLVERS. `working_set`: an encoder of this model's dictionary
    to use (and whose chunk counts to update) when the solver calls for one.
    """
    batches = chunk_batches(recording.n_samples, chunk_size, batch_chunks, start, stop)
    total = sum(b - a for batch in batches for a, b in batch)
    scale = noise_scale(noise_levels)
    lipschitz = model.lipschitz()
    if not uses_working_set(solver, model.filters.device):
        working_set = None
    elif working_set is None:
        working_set = WorkingSetEncoder(model, lipschitz)
    done = 0
    for batch_cores in batches:
        if should_stop is not None and should_stop():
            return
        adapt_threads()
        for a, b, w0, codes, signal, _ in encode_batch(model, recording, scale, batch_cores, lipschitz, working_set):
            yield (a, b, w0, codes, signal) if with_signal else (a, b, w0, codes)
        done += sum(b - a for a, b in batch_cores)
        if progress is not None:
            progress(done / max(total, 1))


@dataclass
class SpikeSettings:
    """Everything that turns a batch of chunks into spikes, besides the recording. All of it is small
    (the dictionary is the largest part), so it can travel to other processes with each sort."""

    filters: np.ndarray  # (n_filters, n_channels, n_taps) float32, the model's unit-norm filters bit for bit
    lambdas: np.ndarray  # (n_filters,) float32 thresholds, noise-σ units
    n_iterations: int
    n_debias_iterations: int
    lipschitz: float
    noise_levels: np.ndarray  # (n_channels,) float32 µV
    dead_time: int  # samples
    min_amplitude: float | np.ndarray  # noise-σ units; or (n_filters,), each filter's (see bars_of)
    prior: AmplitudePrior | None
    solver: str
    device: str  # where the model ran: the same device type gives the same solver and the same spikes
    # > 0: the working set's optimality checks may stop early (working_set.ROUGH_SETTLED_FRACTION);
    # only for passes that decide which filters are neurons, never for the sort's spikes.
    settled_fraction: float = 0.0

    @classmethod
    def of(cls, model: CRsAE, noise_levels: np.ndarray, dead_time: int, min_amplitude: float | np.ndarray,
           prior: AmplitudePrior | None = None, solver: str = "auto", settled_fraction: float = 0.0) -> "SpikeSettings":
        uses_working_set(solver, model.filters.device)  # refuse an unknown solver before any work
        return cls(
            filters=model.filters.detach().cpu().numpy().copy(),
            lambdas=model.lambdas.detach().cpu().numpy().copy(),
            n_iterations=model.n_iterations,
            n_debias_iterations=model.n_debias_iterations,
            lipschitz=model.lipschitz(),
            noise_levels=np.asarray(noise_levels, dtype=np.float32).copy(),
            dead_time=int(dead_time),
            min_amplitude=(float(min_amplitude) if np.ndim(min_amplitude) == 0
                           else np.asarray(min_amplitude, dtype=np.float32).copy()),
            prior=prior,
            solver=solver,
            device=model.filters.device.type,
            settled_fraction=float(settled_fraction),
        )

    def same_as(self, other: "SpikeSettings") -> bool:
        """Whether `other` finds the same spikes: every field equal, arrays bit for bit."""
        def equal(a, b) -> bool:
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                        and a.dtype == b.dtype and a.tobytes() == b.tobytes())
            if isinstance(a, AmplitudePrior) and isinstance(b, AmplitudePrior):
                return equal(a.means, b.means) and equal(a.variances, b.variances)
            return type(a) is type(b) and a == b
        return all(equal(getattr(self, name), getattr(other, name)) for name in self.__dataclass_fields__)

    def model(self) -> CRsAE:
        """The CRsAE these settings came from, on a device of the same type."""
        # Each filter's channels are where it is not zero: with them the model convolves locally, as the
        # sort's own model does (without, a worker's analysis at 384 channels was one dense convolution).
        model = CRsAE(self.filters, self.lambdas, self.n_iterations, self.n_debias_iterations,
                      channel_mask=np.any(self.filters != 0, axis=2))
        with torch.no_grad():
            model.filters.copy_(torch.from_numpy(self.filters))  # not re-normalised: the same bits
        return model.to(select_device(self.device))


class ChunkSpikeFinder:
    """The spikes of a batch of chunks: the one per-chunk step of every sort.

    `infer_spikes` runs it over the batches in order in this process; the
    distributed sort (engine/pipeline/distributed.py) runs it in worker
    processes, one batch per task, from the same `SpikeSettings`.
    """

    def __init__(self, settings: SpikeSettings, model: CRsAE | None = None) -> None:
        self.settings = settings
        self.model = settings.model() if model is None else model
        self.filters = settings.filters  # (n_filters, n_channels, n_taps)
        self.filter_peaks = peak_taps(settings.filters.transpose(0, 2, 1))
        self.scale = noise_scale(settings.noise_levels)
        # What refinement may relabel each filter's spikes to (computed once, not per chunk).
        self.candidates_of = filters_sharing_channels(settings.filters) if settings.prior is not None else None
        self._shares: CodeShares | None = None  # the sort's spikes only (code_shares.py); made on the first batch
        self.working_set = (
            WorkingSetEncoder(self.model, settings.lipschitz, settled_fraction=settings.settled_fraction)
            if uses_working_set(settings.solver, self.model.filters.device) else None
        )
        # The filters' cross-correlations, for explaining away and refinement (the working set has them already).
        self.gram = self.working_set.gram if self.working_set is not None else gram_tensor(self.model)
        self.gram_rows = (self.working_set.gram_rows if self.working_set is not None
                          else GramRows(self.gram, interacting_partners(self.gram)))

    def batch_spikes(self, recording: Recording, batch_cores: list[tuple[int, int]]) -> list[SpikeEvents]:
        """One SpikeEvents per chunk of the batch, in the batch's order."""
        return [events for events, _, _ in self.batch_spikes_and_signals(recording, batch_cores)]

    def batch_spikes_and_signals(self, recording: Recording, batch_cores: list[tuple[int, int]],
                                 ) -> list[tuple[SpikeEvents, int, np.ndarray]]:
        """(spikes, window start, noise-normalised signal as read) per chunk of the batch, in order: the
        signal is each chunk's with its margins (encode_batch), for a caller that needs what the spikes
        leave unexplained without reading (and band-passing) the recording again."""
        s = self.settings
        if s.prior is not None and self._shares is None:
            self._shares = CodeShares.of(self.filters, recording.sampling_rate, self.filter_peaks)
        return [
            (spikes_from_codes(codes, signal, window_start, (core_start, core_stop), self.filters, self.filter_peaks,
                               s.dead_time, s.min_amplitude, s.prior, self.candidates_of, self.gram,
                               correlation, self.gram_rows, self._shares), window_start, signal)
            for core_start, core_stop, window_start, codes, signal, correlation in encode_batch(
                self.model, recording, self.scale, batch_cores, s.lipschitz, self.working_set,
                with_correlation=s.prior is not None)
        ]


def spikes_from_codes(
    codes: np.ndarray,
    signal: np.ndarray,
    window_start: int,
    core: tuple[int, int],
    filters: np.ndarray,
    filter_peak_taps: np.ndarray,
    dead_time: int,
    min_amplitude: float | np.ndarray,
    prior: AmplitudePrior | None = None,
    candidates_of: list[np.ndarray] | None = None,
    gram: np.ndarray | None = None,
    correlation: np.ndarray | None = None,
    gram_rows: GramRows | None = None,
    shares: CodeShares | None = None,
) -> SpikeEvents:
    """The spikes of one chunk: code maxima, less the redundant ones, optionally relabelled.

    1. Local maxima of each filter's code, at least `dead_time` apart. A spike
       between two samples is coded as two neighbouring non-zeros, so its
       amplitude sums the code over ±1 sample around the maximum. With `shares`
       (engine/pipeline/code_shares.py), a faint spike the lasso split between
       look-alike filters, each share under the bar, passes as its biggest share.
    2. Events the data do not need (split between look-alike filters) are
       removed and the rest refitted (engine/pipeline/explain_away.py), with the lasso's
       own bar for a lone spike, λ², as the energy an event must explain.
    3. With an amplitude `prior`, each spike is relabelled by its best filter
       given its neighbours (engine/pipeline/refinement.py), which reads the residual's
       correlation with every filter: `correlation` (the signal's, Hᵀy, as the codes)
       less what the kept spikes explain, summed from the Gram rows (`gram_rows`, built
       from `gram` when not given).
    Only spikes whose time falls inside `core` are kept. `candidates_of`: see refinement.filters_sharing_channels.
    signal: (n_channels, n_window) noise-normalised; filters: (n_filters, n_channels, n_taps);
    gram: the filters' Gram tensor (working_set.gram_tensor), for step 2's products (optional
    without a prior, faster) and step 3's.
    """
    if prior is not None and (gram is None or correlation is None):
        raise ValueError("relabelling spikes with an amplitude prior needs the filters' Gram tensor and the "
                         "signal's correlation with them (encode_batch(..., with_correlation=True))")
    if codes.size == 0:
        return SpikeEvents.empty()
    spike_filters, indices, triplets = kept_events(codes, signal, filters, dead_time, min_amplitude, gram, shares)
    if prior is None:
        times = indices + filter_peak_taps[spike_filters]
        amplitudes = triplets.sum(axis=1)
    else:
        if gram_rows is None:
            gram_rows = GramRows(gram, interacting_partners(gram))
        residual_correlation = correlation - explained_correlation(gram_rows, indices, spike_filters, triplets,
                                                                   codes.shape)
        times, spike_filters, amplitudes = refine_spikes(
            residual_correlation, indices, spike_filters, triplets, gram, filter_peak_taps, prior,
            max_shift=dead_time, candidates_of=candidates_of if candidates_of is not None
            else filters_sharing_channels(filters),
        )
    times = times + window_start
    inside = (times >= core[0]) & (times < core[1]) & (amplitudes >= bars_of(min_amplitude, spike_filters))
    events = SpikeEvents(times[inside].astype(np.int64), spike_filters[inside].astype(np.int32),
                         amplitudes[inside].astype(np.float32))
    return _one_per_dead_time(events, dead_time)


def explained_correlation(gram_rows: GramRows, code_index: np.ndarray, spike_filters: np.ndarray,
                          code_triplets: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(n_filters, n_codes) HᵀHx for the spikes' codes x (each spike's at index − 1, index, index + 1):
    their reconstruction's correlation with every filter, summed from the Gram rows."""
    times = (np.asarray(code_index, np.int64)[:, None] + np.arange(-1, 2)[None, :]).ravel()
    filters = np.repeat(np.asarray(spike_filters, np.int64), 3)
    values = np.asarray(code_triplets, np.float32).ravel()
    placed = values != 0  # a maximum's neighbour outside the chunk is 0 (code_maxima pads with zeros)
    return gram_rows.product(np.zeros(int(placed.sum()), np.int64), filters[placed], times[placed], values[placed],
                             (1, *shape))[0]


def kept_events(codes: np.ndarray, signal: np.ndarray, filters: np.ndarray, dead_time: int, min_amplitude: float | np.ndarray,
                gram: np.ndarray | None = None, shares: CodeShares | None = None,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The spikes the codes carry, as sorting reads them (steps 1 and 2 of spikes_from_codes).

    Returns, for the kept events only: (filters, code indices, (n, 3) codes at i-1, i, i+1
    refitted (float32)); training's dictionary update reads the same spikes
    (dictionary_update.codes_of_kept_spikes). With `gram`, the events' products come from it
    (explain_away.eliminate_redundant_codes), else from their atoms.
    """
    spike_filters, indices, triplets = code_maxima(codes, dead_time)
    sums, bars = triplets.sum(axis=1), bars_of(min_amplitude, spike_filters)
    # With `shares`, a faint spike the lasso split between look-alike filters passes as its biggest share.
    strong = sums >= bars if shares is None else shares.passes(spike_filters, indices, sums, bars)
    spike_filters, indices, triplets = spike_filters[strong], indices[strong], triplets[strong]
    min_energy = bars_of(min_amplitude, spike_filters) ** 2
    if gram is None:
        starts, atoms, channels = event_atoms(indices, spike_filters, triplets, filters)
        keep, scales = eliminate_redundant_events(signal, starts, atoms, min_energy=min_energy, channels=channels)
    else:
        keep, scales = eliminate_redundant_codes(signal, indices, spike_filters, triplets, filters, gram,
                                                 min_energy=min_energy)
    triplets = (triplets[keep] * scales[keep][:, None]).astype(np.float32)
    return spike_filters[keep], indices[keep], triplets


def bars_of(min_amplitude: float | np.ndarray, spike_filters: np.ndarray) -> float | np.ndarray:
    """The smallest amplitude each spike may have: `min_amplitude` itself, or, given one per filter
    ((n_filters,), the model's λ of each: a faint neuron's filter has a lower one), its filter's."""
    if np.ndim(min_amplitude) == 0:
        return float(min_amplitude)
    return np.asarray(min_amplitude, dtype=np.float64)[spike_filters]


def code_maxima(codes: np.ndarray, dead_time: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(filters, code indices, (n, 3) codes at i-1, i, i+1) of each code's local maxima: a positive code that is
    at least every code of its filter within the dead time (engine/model/local_peaks.local_maxima)."""
    return local_maxima(codes, dead_time)


def _one_per_dead_time(events: SpikeEvents, dead_time: int) -> SpikeEvents:
    """Keep the biggest spike of a filter among those closer than the dead time."""
    order = np.lexsort((-events.amplitudes, events.times, events.filters))
    events = SpikeEvents(events.times[order], events.filters[order], events.amplitudes[order])
    duplicate = np.zeros(len(events), dtype=bool)
    same_filter = events.filters[1:] == events.filters[:-1]
    close = np.diff(events.times) <= dead_time
    # Of two close spikes of one filter, drop the smaller one.
    smaller_second = events.amplitudes[1:] <= events.amplitudes[:-1]
    pair = same_filter & close
    duplicate[1:][pair & smaller_second] = True
    duplicate[:-1][pair & ~smaller_second] = True
    return SpikeEvents(events.times[~duplicate], events.filters[~duplicate], events.amplitudes[~duplicate])


def infer_spikes(
    model: CRsAE,
    recording: Recording,
    noise_levels: np.ndarray,
    dead_time: int,
    min_amplitude: float | np.ndarray,
    chunk_size: int | None = None,
    batch_chunks: int = BATCH_CHUNKS,
    start: int = 0,
    stop: int | None = None,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    prior: AmplitudePrior | None = None,
    solver: str = "auto",
    settled_fraction: float = 0.0,
    parallel: int | None = None,
    known: tuple[SpikeSettings, dict[int, list[SpikeEvents]]] | None = None,
) -> SpikeEvents:
    """Spikes of every filter over [start, stop) of a (preprocessed) recording.

    `known`: (settings, spikes by batch index) that an earlier pass found in this same recording with
    these very settings over the default batches (faint_units.FaintSearch): those batches are taken as
    they are, not coded again. Ignored when the settings or the batches differ.

    `settled_fraction` > 0 codes more roughly and faster (SpikeSettings.settled_fraction).
    `parallel`: batches coded at once (`spikes_of_batches`); None: one per core other programs
    leave free on the CPU's working-set route (engine/cpu.py), one on a GPU.

    See `spikes_from_codes` for how a chunk's codes become spikes; with an
    amplitude `prior`, every spike is relabelled by its best filter given its
    neighbours (engine/pipeline/refinement.py).
    """
    chunk_size = chunk_size or default_chunk_size(recording, model.n_taps)
    batches = chunk_batches(recording.n_samples, chunk_size, batch_chunks, start, stop)
    settings = SpikeSettings.of(model, noise_levels, dead_time, min_amplitude, prior, solver, settled_fraction)
    done: dict[int, list[SpikeEvents]] = {}
    if known is not None and known[0].same_as(settings) and (chunk_size, batch_chunks, start, stop) == (
            default_chunk_size(recording, model.n_taps), BATCH_CHUNKS, 0, None):
        done = {index: parts for index, parts in known[1].items() if index < len(batches)}
    finder = ChunkSpikeFinder(settings, model)
    if parallel is None:
        parallel = adapt_threads() if finder.working_set is not None else 1  # a GPU batches chunks itself
    left = [index for index in range(len(batches)) if index not in done]
    coded = spikes_of_batches(finder, recording, [batches[index] for index in left], parallel,
                              progress=progress, should_stop=should_stop, by_batch=True)
    done.update((index, parts) for index, parts in zip(left, coded) if parts is not None)
    return SpikeEvents.concatenate([part for index in sorted(done) for part in done[index]])


def spikes_of_batches(
    finder: "ChunkSpikeFinder",
    recording: Recording,
    batches: list[list[tuple[int, int]]],
    parallel: int = 1,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    by_batch: bool = False,
) -> list[SpikeEvents] | list[list[SpikeEvents]]:
    """The spikes of every chunk of `batches`, in order, with up to `parallel` batches at a time
    (`by_batch`: one list of the chunks' spikes per batch, None for a batch not coded because of a stop).

    Batches are independent, and most of a batch's time on a CPU is many small steps (the working
    set's FISTA, explain-away) that one thread runs as fast as two. So each free core takes a
    batch of its own, in a thread with one torch thread, rather than both cores working on one batch
    in lockstep: measured on 30 s of the 32-channel probe, 40.4 s one batch at a time, 24.4 s two at
    a time. Independent batches also degrade gracefully when another program takes a core (no
    thread waits for another, unlike a parallel operation; engine/cpu.py). Only `parallel` batches
    are in memory at once. Stops after the batches under way when `should_stop()` turns true.
    """
    total = max(sum(b - a for batch in batches for a, b in batch), 1)
    parts: list[list[SpikeEvents] | None] = [None] * len(batches)
    done = 0
    if parallel <= 1 or len(batches) < 2:
        for index, batch_cores in enumerate(batches):
            if should_stop is not None and should_stop():
                break
            adapt_threads()
            parts[index] = finder.batch_spikes(recording, batch_cores)
            done += sum(b - a for a, b in batch_cores)
            if progress is not None:
                progress(done / total)
    else:
        with single_thread(), ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="sparsort-batch") as pool:
            futures = {pool.submit(finder.batch_spikes, recording, batch_cores): index
                       for index, batch_cores in enumerate(batches)}
            try:
                for future in as_completed(futures):
                    index = futures[future]
                    parts[index] = future.result()
                    done += sum(b - a for a, b in batches[index])
                    if progress is not None:
                        progress(done / total)
                    if should_stop is not None and should_stop():
                        break
            finally:
                for future in futures:
                    future.cancel()  # those not started; the pool waits for those under way
    if by_batch:
        return parts
    return [part for chunk_parts in parts if chunk_parts is not None for part in chunk_parts]
