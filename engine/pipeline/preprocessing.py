"""Band-pass filtering, common median reference and noise estimation.

`PreprocessedRecording` applies them lazily, chunk by chunk: each request
reads a margin of extra samples either side from its parent, filters, and
crops, so any chunking gives the same samples as filtering the whole array.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.signal import butter, sosfilt

from engine.cpu import cores_to_use, in_order
from engine.io.recording import Recording, RecordingError
from engine.pipeline.sos_filter import sos_filtfilt

FILTER_ORDER = 3  # per pass; forward-backward filtering doubles the effective order
# The margin is where the filter's impulse response has decayed to this
# fraction of its peak: beyond it a chunk edge changes nothing visible in float32.
_IMPULSE_TAIL = 1e-7
MAD_TO_SIGMA = 0.6745  # median |x| of a unit Gaussian: MAD / 0.6745 estimates σ



# The common median reference removes what all channels share (line noise,
# movement, reference artefacts). On few channels the median is made of the
# spikes themselves: with 2 channels it turns them into exact opposites (the
# CRsAE then learned nothing), and on a tetrode, where every wire sees every
# spike, it cut spike amplitudes. So by default it is applied from 8 channels,
# i.e. on probes; pass common_reference=True to force it.
MIN_CHANNELS_FOR_COMMON_REFERENCE = 8

def default_freq_max(sampling_rate: float) -> float:
    """Upper band edge: 6 kHz, or 45% of the sampling rate when that is lower."""
    return min(6000.0, 0.45 * sampling_rate)


@functools.lru_cache(maxsize=32)
def bandpass_sos(sampling_rate: float, freq_min: float = 300.0, freq_max: float | None = None) -> np.ndarray:
    """Butterworth band-pass as second-order sections, (n_sections, 6) float64."""
    if freq_max is None:
        freq_max = default_freq_max(sampling_rate)
    nyquist = sampling_rate / 2
    if not (0 < freq_min < freq_max < nyquist):
        raise RecordingError(
            f"band-pass {freq_min:g}-{freq_max:g} Hz is not possible at {sampling_rate:g} Hz: "
            f"need 0 < freq_min < freq_max < {nyquist:g} Hz (half the sampling rate); "
            f"the usual band is 300 Hz to {default_freq_max(sampling_rate):g} Hz"
        )
    return butter(FILTER_ORDER, [freq_min, freq_max], btype="bandpass", fs=sampling_rate, output="sos")


@functools.lru_cache(maxsize=32)
def filter_margin(sampling_rate: float, freq_min: float = 300.0, freq_max: float | None = None) -> int:
    """Samples after which the band-pass impulse response has died out.

    Chunks are read with this many extra samples each side; whole arrays are
    padded by this much at their ends.
    """
    sos = bandpass_sos(sampling_rate, freq_min, freq_max)
    # The slowest pole sits near freq_min and decays within a few of its
    # periods; 20 periods is ample room to find where it ends.
    n_probe = int(math.ceil(20 * sampling_rate / freq_min)) + 1
    impulse = np.zeros(n_probe)
    impulse[0] = 1.0
    response = np.abs(sosfilt(sos, impulse))  # (n_probe,) float64
    above_tail = np.flatnonzero(response > _IMPULSE_TAIL * response.max())
    return int(above_tail[-1]) + 1


# The noise's medians work on this many channels at a time: their transposed copies then stay in
# the CPU's caches.
_CHANNELS_AT_A_TIME = 16


def bandpass_filter(traces: np.ndarray, sampling_rate: float, freq_min: float = 300.0,
                    freq_max: float | None = None) -> np.ndarray:
    """Zero-phase band-pass of traces (n_samples, n_channels) along time; float32 µV out.

    The ends are extended by odd reflection (by `filter_margin` samples), which
    keeps the signal and its slope continuous and so adds no edge transient.
    """
    traces = np.asarray(traces)
    if traces.ndim not in (1, 2):
        raise RecordingError(f"traces must be (n_samples, n_channels), got shape {traces.shape}")
    n_samples = traces.shape[0]
    if n_samples == 0:
        return np.zeros(traces.shape, dtype=np.float32)
    band = (float(sampling_rate), float(freq_min),
            float(default_freq_max(sampling_rate) if freq_max is None else freq_max))
    sos = bandpass_sos(*band)
    padlen = min(filter_margin(*band), n_samples - 1)
    return sos_filtfilt(sos, traces, padlen)  # scipy's sosfiltfilt, bit for bit, channels at once


def common_median_reference(traces: np.ndarray, reference_channels: np.ndarray | None = None) -> np.ndarray:
    """Subtract, at each sample, the median across channels (those of `reference_channels`, or every one):
    removes common-mode noise.

    With one channel the median is the signal itself, so it is left unchanged.
    """
    traces = np.asarray(traces, dtype=np.float32)
    if traces.ndim != 2:
        raise RecordingError(f"traces must be (n_samples, n_channels), got shape {traces.shape}")
    if traces.shape[1] == 1:
        return traces
    reference = traces if reference_channels is None else traces[:, reference_channels]
    return traces - median_of_rows(reference)[:, None]


def median_of_rows(values: np.ndarray) -> np.ndarray:
    """np.median(values, axis=1), the same numbers, 3× faster on a probe's rows.

    numpy's median selects the two middle values with a two-pivot partition; one pivot and the
    largest value below it is the same pair, and cost 0.45 s instead of 1.45 s for the common
    median of 10 s of 384 channels. (NaN-free input: every read of a float recording is checked for NaN.)"""
    n = values.shape[1]
    partitioned = np.partition(values, n // 2, axis=1)
    upper = partitioned[:, n // 2]
    if n % 2:
        return upper
    return (partitioned[:, : n // 2].max(axis=1) + upper) / 2


def median_of_columns(values: np.ndarray) -> np.ndarray:
    """np.median(values, axis=0), the same numbers, over the first axis of an array of any shape (a stack of
    snippets: their median snippet). numpy partitions down the strided first axis; laid out along rows,
    `median_of_rows` takes 0.4 of its time (300 snippets of 270 samples × 12 channels: 16 → 6 ms; the
    end stages' medians were 1.3 s of a 32-channel sort)."""
    values = np.asarray(values)
    rows = np.ascontiguousarray(values.reshape(len(values), -1).T)
    return median_of_rows(rows).reshape(values.shape[1:])


def median_absolute_deviations(traces: np.ndarray) -> np.ndarray:
    """(n_channels,) each channel's median |x − median(x)| of traces (n_samples, n_channels), as numpy's
    medians along time give them, a block of channels at a time laid out along time: numpy's medians
    down the columns of 10 s of 384 channels took 10.3 s, these 2.4 s; a block per free core at a time
    (numpy's partition leaves the GIL: 0.81 → 0.44 s for 24 blocks on two cores)."""
    firsts = list(range(0, traces.shape[1], _CHANNELS_AT_A_TIME))

    def deviations(first: int) -> np.ndarray:
        block = np.ascontiguousarray(traces[:, first : first + _CHANNELS_AT_A_TIME].T)
        return median_of_rows(np.abs(block - median_of_rows(block)[:, None]))

    parts = list(in_order(deviations, firsts, min(cores_to_use(), len(firsts))))
    return np.concatenate(parts).astype(np.float32) if parts else np.empty(0, dtype=np.float32)


def random_chunks(recording: Recording, n_chunks: int, chunk_duration_s: float, seed: int = 0) -> np.ndarray:
    """(n_chunks * chunk length, n_channels) float32 µV: `n_chunks` random, non-overlapping chunks of
    `recording` in order, or the whole recording when it is shorter than that."""
    chunk_length = max(1, int(round(chunk_duration_s * recording.sampling_rate)))
    if n_chunks * chunk_length >= recording.n_samples:
        return recording.get_traces()
    n_slots = recording.n_samples // chunk_length
    slots = np.sort(np.random.default_rng(seed).choice(n_slots, size=n_chunks, replace=False)).tolist()

    def read(slot: int) -> np.ndarray:
        return recording.get_traces(slot * chunk_length, (slot + 1) * chunk_length)

    # A chunk per free core at a time: the band-pass leaves the GIL (engine/pipeline/sos_filter.py).
    return np.concatenate(list(in_order(read, slots, min(cores_to_use(), len(slots)))))


def estimate_noise_levels(recording: Recording, n_chunks: int = 20, chunk_duration_s: float = 0.5,
                          seed: int = 0) -> np.ndarray:
    """(n_channels,) float32 noise σ in µV per channel, robust to spikes (MAD / 0.6745).

    Reads `n_chunks` random, non-overlapping chunks, or the whole recording
    when it is shorter than that.
    """
    if n_chunks < 1 or chunk_duration_s <= 0:
        raise RecordingError(
            f"need n_chunks >= 1 and chunk_duration_s > 0, got {n_chunks} and {chunk_duration_s}"
        )
    if recording.n_samples == 0:
        raise RecordingError("cannot estimate noise of an empty recording (0 samples)")
    traces = random_chunks(recording, n_chunks, chunk_duration_s, seed)
    return (median_absolute_deviations(traces) / MAD_TO_SIGMA).astype(np.float32)


class PreprocessedRecording(Recording):
    """A recording seen through the band-pass and (optionally) common median reference."""

    # Its own work is a function of the samples; its parent's get_traces takes the parent's reads
    # one at a time if that reader needs it.
    concurrent_reads = True

    def __init__(self, recording: Recording, freq_min: float = 300.0, freq_max: float | None = None,
                 common_reference: bool | None = None) -> None:
        super().__init__(recording.sampling_rate, recording.n_channels, recording.n_samples,
                         recording.channel_positions, recording.path, recording.source_dtype)
        self.parent = recording
        self.freq_min = float(freq_min)
        self.freq_max = float(default_freq_max(self.sampling_rate) if freq_max is None else freq_max)
        bandpass_sos(self.sampling_rate, self.freq_min, self.freq_max)  # fail now on a bad band
        self.margin = filter_margin(self.sampling_rate, self.freq_min, self.freq_max)
        self.common_reference = (
            recording.n_channels >= MIN_CHANNELS_FOR_COMMON_REFERENCE if common_reference is None else bool(common_reference)
        )
        # The channels the median is taken over: channels filled from their neighbours (flat ones,
        # engine/pipeline/bad_channels.py) would weigh their neighbours twice in it.
        self.reference_channels: np.ndarray | None = getattr(recording, "working_channels", None)

    @functools.cached_property
    def noise_levels(self) -> np.ndarray:
        """(n_channels,) float32 noise σ in µV of the preprocessed traces."""
        return estimate_noise_levels(self)

    def _read_block(self, start, stop, channel_index):
        read_start = max(0, start - self.margin)
        read_stop = min(self.n_samples, stop + self.margin)
        # The median needs every channel; without it, read only those asked for.
        parent_channels = None if self.common_reference else channel_index
        raw = self.parent.get_traces(read_start, read_stop, parent_channels)
        filtered = bandpass_filter(raw, self.sampling_rate, self.freq_min, self.freq_max)
        traces = filtered[start - read_start: stop - read_start]  # (stop - start, n) float32 µV
        if self.common_reference:
            traces = common_median_reference(traces, self.reference_channels)
            if channel_index is not None:
                traces = traces[:, channel_index]
        return np.ascontiguousarray(traces)

    def band_passed(self, start: int, stop: int, channels: np.ndarray) -> np.ndarray:
        """(stop - start, n_selected) float32 µV: samples [start, stop) of `channels`, band-passed without
        the common median reference (which reads every channel), as `snippets` reads them."""
        read_start, read_stop = max(0, start - self.margin), min(self.n_samples, stop + self.margin)
        raw = self.parent.get_traces(read_start, read_stop, np.asarray(channels, dtype=np.int64))
        filtered = bandpass_filter(raw, self.sampling_rate, self.freq_min, self.freq_max)
        return np.ascontiguousarray(filtered[start - read_start : stop - read_start], dtype=np.float32)

    def snippets(self, starts: np.ndarray, length: int, channels: np.ndarray) -> np.ndarray:
        """(n_starts, length, n_selected) float32 µV: band-passed snippets of `channels` from each start,
        without the common median reference, which needs every channel of every snippet (a snippet of
        20 channels cost 32 ms at 384 channels that way, the band-pass of all of them). For averages of
        many snippets, where noise common to the channels averages out; ends are read as far as the
        recording goes, the rest repeats its edge sample."""
        starts = np.asarray(starts, dtype=np.int64)
        channels = np.asarray(channels, dtype=np.int64)
        reach = length + 2 * self.margin
        # (reach, n_starts, n_channels): the compiled filter runs down time with every snippet's channels side by side.
        raw = np.empty((reach, len(starts), len(channels)), dtype=np.float32)
        for i, start in enumerate((starts - self.margin).tolist()):
            first, last = max(start, 0), min(start + reach, self.n_samples)
            part = self.parent.get_traces(first, last, channels)
            raw[:, i] = np.pad(part, ((first - start, start + reach - last), (0, 0)), mode="edge") if part.size else 0.0
        sos = bandpass_sos(self.sampling_rate, self.freq_min, self.freq_max)
        filtered = sos_filtfilt(sos, raw.reshape(reach, -1), min(self.margin, reach - 1)).reshape(raw.shape)
        return np.ascontiguousarray(filtered[self.margin:self.margin + length].transpose(1, 0, 2))

    def __repr__(self) -> str:
        reference = ", common median reference" if self.common_reference else ""
        return (f"PreprocessedRecording({self.freq_min:g}-{self.freq_max:g} Hz band-pass{reference} "
                f"of {self.parent!r})")
