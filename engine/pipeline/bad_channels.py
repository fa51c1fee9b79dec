"""Flat channels found before sorting and filled from their neighbours.

A probe often has channels that record nothing: a broken or unconnected contact, a reference site, a
channel a pipeline zeroed. Measured on SpikeInterface's generator (48 channels, 30 neurons, 60 s), four
channels set to zero took the sort from 0.895 to 0.000 (6 units; 0.919 -> 0.279 unwhitened): the sort
scales each channel by its noise level, and a flat channel's noise level is what the common reference
leaves on it. So the sort first measures each channel's noise (band-passed, before any reference,
MAD / 0.6745 over a few random chunks); a channel under FLAT_FRACTION of the probe's median is flat,
and every read of the recording fills it from the other channels by kriging (engine/pipeline/kriging.py;
IBL's pipeline and SpikeInterface's interpolate_bad_channels do the same), so it carries what its
neighbours record and the channel count, the phy folder's channel map, and every view stay as they were.
A recording with every channel flat is refused before any work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.io.recording import Recording, RecordingError
from engine.pipeline.kriging import fill_weights, with_filled_columns
from engine.pipeline.preprocessing import PreprocessedRecording, estimate_noise_levels

# A channel whose noise is under this fraction of the probe's median records nothing (a working channel's
# noise varies by tens of percent, not tenfold).
FLAT_FRACTION = 0.1
# What the noise is measured on: random chunks, enough samples for a median and cheap on 384 channels.
NOISE_CHUNKS, NOISE_CHUNK_S = 10, 0.1


@dataclass(frozen=True)
class FlatChannels:
    """Which channels are flat, and how each is filled from the working ones."""

    channels: np.ndarray  # (n_flat,) int64, ascending
    noise_uv: np.ndarray  # (n_channels,) float32 band-passed noise σ per channel
    sources: np.ndarray  # (n_sources,) int64: the working channels the flat ones are filled from
    weights: np.ndarray  # (n_sources, n_flat) float32

    def describe(self) -> str:
        median = float(np.median(self.noise_uv))
        if not len(self.channels):
            return "no flat channel"
        listed = ", ".join(str(int(c)) for c in self.channels[:12]) + (" ..." if len(self.channels) > 12 else "")
        return (f"{len(self.channels)} flat channel{'s' if len(self.channels) > 1 else ''} ({listed}: noise under "
                f"{FLAT_FRACTION:g} x the probe's median {median:.3g} µV) filled from their neighbours")


def find_flat_channels(recording: Recording, seed: int = 0) -> FlatChannels:
    """The flat channels of `recording` (raw) and their fill; raises RecordingError if every channel is flat."""
    noise = estimate_noise_levels(PreprocessedRecording(recording, common_reference=False),
                                  NOISE_CHUNKS, NOISE_CHUNK_S, seed)
    working = noise > 0
    if not working.any():
        raise RecordingError(
            f"every one of the {recording.n_channels} channels is flat (no noise after the band-pass): nothing "
            "was recorded, or the file is read wrongly — check the sampling rate, --n-channels and --dtype")
    flat = np.flatnonzero(noise < FLAT_FRACTION * np.median(noise[working]))
    good = np.setdiff1d(np.arange(recording.n_channels), flat)
    return FlatChannels(flat, noise, *fill_weights(recording.channel_positions, flat, good))


class FlatChannelsFilled(Recording):
    """`parent` (raw) with its flat channels filled from the working ones on every read."""

    # Its own work is a function of the samples; the parent's get_traces takes its reads one at a time
    # if that reader needs it.
    concurrent_reads = True

    def __init__(self, parent: Recording, flat: FlatChannels) -> None:
        super().__init__(parent.sampling_rate, parent.n_channels, parent.n_samples, parent.channel_positions,
                         parent.path, parent.source_dtype)
        self.parent = parent
        self.flat = flat
        self.format_name = parent.format_name
        self.positions_source = parent.positions_source
        self.notes = list(parent.notes)
        # What a common median reference is taken over (engine/pipeline/preprocessing.py).
        self.working_channels = np.setdiff1d(np.arange(self.n_channels), flat.channels)
        self.gain_to_uv = getattr(parent, "gain_to_uv", None)

    def _read_block(self, start, stop, channel_index):
        asked = np.arange(self.n_channels) if channel_index is None else np.asarray(channel_index)
        return with_filled_columns(lambda channels: self.parent.get_traces(start, stop, channels), asked,
                                   self.flat.channels, self.flat.sources, self.flat.weights)

    def __repr__(self) -> str:
        return f"FlatChannelsFilled({len(self.flat.channels)} channels of {self.parent!r})"


def with_flat_channels_filled(recording: Recording, seed: int = 0) -> tuple[Recording, FlatChannels]:
    """`recording` as the sort should read it: unchanged when no channel is flat, else its flat channels
    filled; and what was found. A preprocessed recording (band-pass and reference only: this comes before
    motion correction and whitening) has its raw parent filled, then is preprocessed again as it was."""
    if isinstance(recording, PreprocessedRecording):
        filled, flat = with_flat_channels_filled(recording.parent, seed)
        if filled is recording.parent:
            return recording, flat
        return PreprocessedRecording(filled, recording.freq_min, recording.freq_max, recording.common_reference), flat
    flat = find_flat_channels(recording, seed)
    return (FlatChannelsFilled(recording, flat) if len(flat.channels) else recording), flat
