"""Snippets of a few channels of a probe recording, fast enough to follow a click (numpy/scipy only).

The sort's preprocessing subtracts, at each sample, the median across every
channel (common median reference), so reading 16 channels of a 384-channel
probe band-passes all 384: measured at 30 kHz, 100 spikes took 2.2 s, nearly
all of a Waveforms redraw. For the curation views three things change, none
of them visible in a waveform:
- the median of a fixed, evenly spread subset of REFERENCE_CHANNELS channels
  stands for the full one, so only the channels shown and that subset are
  filtered. It is noisier than the full median by about σ·√(π/2 / 32), a fifth
  of the noise σ, shared by every channel of a snippet; one unit's spike on a
  few channels does not move a median of channels spread along the probe;
- each snippet is filtered with a shorter margin either side (where the
  band-pass impulse response falls to DISPLAY_TAIL of its peak, not 1e-7: at
  30 kHz 170 samples instead of 456), and the margin read is all the padding
  the filter gets; what the cut tail changes is a thousandth of a spike's size;
- all snippets are filtered in one call, as a (spikes, samples, channels)
  block, instead of one call per group of nearby spikes.
Measured on 384 channels at 30 kHz, 100 spikes on 16 channels: 2.2 s through
the preprocessed recording, 0.19 s with the first two changes, see
benchmarks/bench_probe_views.py for all three in the app.

    snippets = read_display_snippets(preprocessed, spike_times, channels, before, after)
    reader = for_views(preprocessed)  # the first two changes, for code that takes a Recording

`for_views` serves the curation's background readers (the features behind
L-ratio and the t-SNE map, data templates for merge suggestions, re-clustering),
which read a few channels per spike through engine.curation.features.read_snippets.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.signal import sosfilt, sosfiltfilt

from engine.curation.features import Cancelled, read_snippets
from engine.io.recording import Recording
from engine.pipeline.preprocessing import bandpass_sos

REFERENCE_CHANNELS = 32  # channels whose median stands for the common reference
DISPLAY_TAIL = 1e-3  # of the band-pass impulse response's peak: where a snippet's margin ends
# Raw values (spikes × samples × channels) filtered at once: 2 MB of float32, 5-15 ms of filtering. Background
# reads (merge suggestions, the t-SNE map, L-ratio) check `should_stop` between batches, where they pause for a
# click's reads: at 1 << 22 a batch was 100-200 ms on shared cores, and a click waited behind it.
BATCH_VALUES = 1 << 19


@functools.lru_cache(maxsize=32)
def display_margin(sampling_rate: float, freq_min: float, freq_max: float, tail: float = DISPLAY_TAIL) -> int:
    """Samples after which the band-pass impulse response stays below `tail` of its peak."""
    impulse = np.zeros(int(np.ceil(20 * sampling_rate / freq_min)) + 1)
    impulse[0] = 1.0
    response = np.abs(sosfilt(bandpass_sos(sampling_rate, freq_min, freq_max), impulse))
    return int(np.flatnonzero(response > tail * response.max())[-1]) + 1


def display_sos(sampling_rate: float, freq_min: float, freq_max: float) -> np.ndarray:
    """The sort's band-pass as float32 sections, so that scipy filters the float32 data in float32: 1.7× faster
    than in float64 (the sections' dtype decides), and 1 s of 64 channels differs by < 3e-4 µV, 3e-5 of the
    noise σ (an int16 recording is itself quantised coarser than that)."""
    return bandpass_sos(sampling_rate, freq_min, freq_max).astype(np.float32)


def for_views(recording: Recording | None, n_reference: int = REFERENCE_CHANNELS) -> Recording | None:
    """`recording` read as the curation views read it (SubsetReferencedRecording) when that saves work:
    a common median over more than 2 × n_reference channels; else `recording` itself."""
    if recording is None or isinstance(recording, SubsetReferencedRecording):
        return recording
    if not getattr(recording, "common_reference", False) or recording.n_channels <= 2 * n_reference:
        return recording
    return SubsetReferencedRecording(recording, n_reference)


class SubsetReferencedRecording(Recording):
    """A PreprocessedRecording as the views read it: a read of a few channels filters only those and the
    reference subset, every read takes the display margin and the subset's median. Measured on 384
    channels at 30 kHz, a 1 s read of every channel (the Traces heat map), on the shared 2 cores:
    0.82-1.2 s through the PreprocessedRecording, 0.58-1.1 s here (the median of 384 channels was 0.3 s of it)."""

    def __init__(self, preprocessed: Recording, n_reference: int = REFERENCE_CHANNELS) -> None:
        super().__init__(preprocessed.sampling_rate, preprocessed.n_channels, preprocessed.n_samples,
                         preprocessed.channel_positions, preprocessed.path, preprocessed.source_dtype)
        self.preprocessed = preprocessed
        self.reference = reference_channels(preprocessed.n_channels, n_reference)  # (r,) int64
        self.margin = display_margin(preprocessed.sampling_rate, preprocessed.freq_min, preprocessed.freq_max)
        self._sos = display_sos(preprocessed.sampling_rate, preprocessed.freq_min, preprocessed.freq_max)

    @property
    def noise_levels(self) -> np.ndarray:
        return self.preprocessed.noise_levels

    def read_snippets(self, spike_times, channels, before, after, progress=None, should_stop=None) -> np.ndarray:
        """engine.curation.features.read_snippets hands its work here: each spike read on its own few channels."""
        return read_display_snippets(self.preprocessed, spike_times, channels, before, after,
                                     len(self.reference), progress, should_stop)

    def _read_block(self, start, stop, channel_index):
        # The channels asked for and the reference ones, each read and filtered once.
        if channel_index is None:
            read, asked, reference = None, slice(None), self.reference
        else:
            read, local = np.unique(np.concatenate([channel_index, self.reference]), return_inverse=True)
            asked, reference = local[: len(channel_index)], local[len(channel_index):]
        read_start, read_stop = max(0, start - self.margin), min(self.n_samples, stop + self.margin)
        raw = self.preprocessed.parent.get_traces(read_start, read_stop, read)  # (n, c) float32 µV
        # Filtered along each channel's own contiguous row: faster than across the columns.
        rows = np.ascontiguousarray(raw.T)  # (c, n): each channel's samples contiguous
        filtered = sosfiltfilt(self._sos, rows, axis=1, padtype="odd", padlen=min(self.margin, len(raw) - 1)).T
        traces = filtered[start - read_start: stop - read_start]  # (stop - start, c) float32 µV
        median = np.median(traces[:, reference], axis=1, keepdims=True)
        return np.ascontiguousarray(traces[:, asked] - median, dtype=np.float32)


def reference_channels(n_channels: int, count: int = REFERENCE_CHANNELS) -> np.ndarray:
    """(min(count, n_channels),) int64 channels spread evenly over the probe, first and last included."""
    return np.unique(np.linspace(0, n_channels - 1, min(count, n_channels)).round().astype(np.int64))


def read_display_snippets(
    recording: Recording, spike_times: np.ndarray, channels: np.ndarray, before: int, after: int,
    n_reference: int = REFERENCE_CHANNELS, progress=None, should_stop=None,
) -> np.ndarray:
    """(n_spikes, before + after, k) float32 µV snippets of `recording` on `channels`, as the views show them.

    `channels`: (k,) the same for every spike, or (n_spikes, k) each spike's own.
    `recording`: an engine.pipeline.preprocessing.PreprocessedRecording (read
    from its parent as described above); any other recording is read as it is.
    Samples beyond either end of the recording read as zero before filtering.
    `progress(fraction)` is told after each batch; `should_stop()` true raises
    engine.curation.features.Cancelled.
    """
    spike_times = np.asarray(spike_times, dtype=np.int64)
    channels = np.asarray(channels, dtype=np.int64)
    parent = getattr(recording, "parent", None)
    if parent is None or not hasattr(recording, "freq_min"):
        return read_snippets(recording, spike_times, channels, before, after, progress=progress, should_stop=should_stop)
    k = channels.shape[-1]
    reference = np.zeros(0, dtype=np.int64)
    if getattr(recording, "common_reference", False):
        reference = reference_channels(recording.n_channels, n_reference)
    margin = display_margin(recording.sampling_rate, recording.freq_min, recording.freq_max)
    sos = display_sos(recording.sampling_rate, recording.freq_min, recording.freq_max)
    length = before + after
    span = length + 2 * margin
    snippets = np.zeros((len(spike_times), length, k), dtype=np.float32)
    batch = max(BATCH_VALUES // (span * (k + len(reference))), 1)
    for first in range(0, len(spike_times), batch):
        if should_stop is not None and should_stop():
            raise Cancelled()
        times = spike_times[first: first + batch]
        # Each spike's channels, then the reference ones: (m, span, k + r) raw µV.
        columns = channels[first: first + batch] if channels.ndim == 2 else np.broadcast_to(channels, (len(times), k))
        raw = np.stack([
            _read_padded(parent, int(t) - before - margin, span, np.concatenate([own, reference]))
            for t, own in zip(times.tolist(), columns)
        ])
        # The margins read are the padding: the filter's start-up dies out within them, so no extension is
        # added (it doubled the samples filtered; measured on a 384-channel sort the snippets moved by 0.7 % of σ rms).
        filtered = sosfiltfilt(sos, raw, axis=1, padtype=None)[:, margin: margin + length]
        if len(reference):
            filtered = filtered[:, :, :k] - np.median(filtered[:, :, k:], axis=2, keepdims=True)
        snippets[first: first + len(times)] = filtered[:, :, :k]
        if progress is not None:
            progress(min(first + batch, len(spike_times)) / len(spike_times))
    return snippets


def _read_padded(recording: Recording, start: int, length: int, channels: np.ndarray) -> np.ndarray:
    """(length, len(channels)) float32 from `start`, zero where it leaves the recording."""
    block = np.zeros((length, len(channels)), dtype=np.float32)
    read_start, read_stop = max(start, 0), min(start + length, recording.n_samples)
    if read_stop > read_start:
        block[read_start - start: read_stop - start] = recording.get_traces(read_start, read_stop, channels)
    return block
