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
  30 kHz 170 samples instead of 456); what the cut tail changes is a
  thousandth of a spike's size;
- all snippets are filtered in one call, as a (spikes, samples, channels)
  block, instead of one call per group of nearby spikes.
Measured on 384 channels at 30 kHz, 100 spikes on 16 channels: 2.2 s through
the preprocessed recording, 0.19 s with the first two changes, see
benchmarks/bench_probe_views.py for all three in the app.

    snippets = read_display_snippets(preprocessed, spike_times, channels, before, after)
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.signal import sosfilt, sosfiltfilt

from engine.curation.features import read_snippets
from engine.io.recording import Recording
from engine.pipeline.preprocessing import bandpass_sos

REFERENCE_CHANNELS = 32  # channels whose median stands for the common reference
DISPLAY_TAIL = 1e-3  # of the band-pass impulse response's peak: where a snippet's margin ends
BATCH_VALUES = 1 << 22  # raw values (spikes × samples × channels) filtered at once: 32 MB of float64


@functools.lru_cache(maxsize=32)
def display_margin(sampling_rate: float, freq_min: float, freq_max: float, tail: float = DISPLAY_TAIL) -> int:
    """Samples after which the band-pass impulse response stays below `tail` of its peak."""
    impulse = np.zeros(int(np.ceil(20 * sampling_rate / freq_min)) + 1)
    impulse[0] = 1.0
    response = np.abs(sosfilt(bandpass_sos(sampling_rate, freq_min, freq_max), impulse))
    return int(np.flatnonzero(response > tail * response.max())[-1]) + 1


def reference_channels(n_channels: int, count: int = REFERENCE_CHANNELS) -> np.ndarray:
    """(min(count, n_channels),) int64 channels spread evenly over the probe, first and last included."""
    return np.unique(np.linspace(0, n_channels - 1, min(count, n_channels)).round().astype(np.int64))


def read_display_snippets(
    recording: Recording, spike_times: np.ndarray, channels: np.ndarray, before: int, after: int,
    n_reference: int = REFERENCE_CHANNELS,
) -> np.ndarray:
    """(n_spikes, before + after, k) float32 µV snippets of `recording` on `channels` (k,), as the views show them.

    `recording`: an engine.pipeline.preprocessing.PreprocessedRecording (read
    from its parent as described above); any other recording is read as it is.
    Samples beyond either end of the recording read as zero before filtering.
    """
    spike_times = np.asarray(spike_times, dtype=np.int64)
    channels = np.asarray(channels, dtype=np.int64)
    parent = getattr(recording, "parent", None)
    if parent is None or not hasattr(recording, "freq_min"):
        return read_snippets(recording, spike_times, channels, before, after)
    reference = np.zeros(0, dtype=np.int64)
    if getattr(recording, "common_reference", False):
        reference = reference_channels(recording.n_channels, n_reference)
    read, local = np.unique(np.concatenate([channels, reference]), return_inverse=True)
    asked, referenced = local[: len(channels)], local[len(channels):]
    margin = display_margin(recording.sampling_rate, recording.freq_min, recording.freq_max)
    sos = bandpass_sos(recording.sampling_rate, recording.freq_min, recording.freq_max)
    length = before + after
    span = length + 2 * margin
    snippets = np.zeros((len(spike_times), length, len(channels)), dtype=np.float32)
    batch = max(BATCH_VALUES // (span * len(read)), 1)
    for first in range(0, len(spike_times), batch):
        times = spike_times[first: first + batch]
        raw = np.stack([_read_padded(parent, int(t) - before - margin, span, read) for t in times])  # (m, span, r)
        filtered = sosfiltfilt(sos, raw, axis=1, padtype="odd", padlen=margin)[:, margin: margin + length]
        if len(referenced):
            filtered = filtered[:, :, asked] - np.median(filtered[:, :, referenced], axis=2, keepdims=True)
        else:
            filtered = filtered[:, :, asked]
        snippets[first: first + len(times)] = filtered
    return snippets


def _read_padded(recording: Recording, start: int, length: int, channels: np.ndarray) -> np.ndarray:
    """(length, len(channels)) float32 from `start`, zero where it leaves the recording."""
    block = np.zeros((length, len(channels)), dtype=np.float32)
    read_start, read_stop = max(start, 0), min(start + length, recording.n_samples)
    if read_stop > read_start:
        block[read_start - start: read_stop - start] = recording.get_traces(read_start, read_stop, channels)
    return block
