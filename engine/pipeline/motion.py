"""Probe drift estimated and undone before sorting (SpikeInterface's motion correction; opt-in).

A probe moves in the brain by micrometres to tens of micrometres over a recording: a neuron's spikes
then slide along the channels, and a sorter that learns one shape per neuron splits it in pieces.
Measured on SpikeInterface's drifting generator (48 channels in two columns 20 µm apart, 30 neurons,
3 min, a ±20 µm zig-zag of period 80 s from 20 s on; `/work/s43` scripts named in
docs/probe-scale-history.md, stop 62): uncorrected 0.359 with 108 units, the same neurons without drift
0.843 with 32, corrected by SpikeInterface's rigid preset 0.846 with 35.

Kilosort and SpikeInterface estimate the drift from where the spikes are, and so does this: the
preprocessed recording (band-passed, common-referenced) is handed to SpikeInterface's compute_motion
(peaks detected, located, their depths followed over time; `MOTION_PRESETS` names the preset each of
`--motion rigid|nonrigid` runs), read chunk by chunk through a view of it, never whole. Every later read
of the recording is moved back by SpikeInterface's kriging interpolation (interpolate_motion_on_traces),
chunk by chunk: a channel's corrected samples are a weighted sum of its neighbours' where the probe had
moved them. It needs SpikeInterface (the `formats` extra) and channels at two depths or more.
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

from engine.io.recording import Recording, RecordingError
from engine.io.spikeinterface_adapter import to_spikeinterface_recording
from engine.pipeline.preprocessing import PreprocessedRecording, common_median_reference

# `--motion` words -> SpikeInterface's compute_motion preset (None: no correction).
MOTION_PRESETS = {"off": None, "rigid": "rigid_fast", "nonrigid": "dredge_fast"}
INSTALL_HINT = "pip install 'sparsort[formats]' (SpikeInterface estimates the drift)"
# SpikeInterface's interpolate_motion's kriging (Kilosort 2.5's): a Gaussian of 20 µm over distance, p = 1; a channel
# moved past the probe's end extrapolated from its nearest (SpikeInterface's default drops such channels, and a
# sort keeps every channel; zeros there instead sorted the drifting recording above 0.165, against 0.774).
KRIGING = {"sigma_um": 20.0, "p": 1, "num_closest": 3, "force_extrapolate": True}
# Interpolation kernels kept (one per motion time bin, n_channels² float32: 590 kB at 384 channels).
KERNELS_KEPT = 256
# A recorded channel whose weight in a corrected one is under this fraction of that one's largest is not read.
KERNEL_FLOOR = 1e-3
# Snippets interpolated at once (each a window of every channel): bounds what a batch holds.
SNIPPETS_PER_STEP = 256


def check_motion_correction(recording: Recording, motion: str) -> None:
    """Raise RecordingError now, before any long work, when `motion` cannot be done on `recording`."""
    if MOTION_PRESETS[motion] is None:  # (the word itself TrainingConfig.validate checked)
        return
    try:
        import spikeinterface.preprocessing  # noqa: F401
    except ImportError as error:
        raise RecordingError(f"motion correction needs SpikeInterface, which is not installed: {INSTALL_HINT}, "
                             "or sort with --motion off") from error
    depths = np.unique(np.round(np.asarray(recording.channel_positions, dtype=np.float64)[:, 1], 3))
    if len(depths) < 2:
        raise RecordingError(f"motion correction follows spikes along the probe's depth, but all "
                             f"{recording.n_channels} channels sit at one depth ({depths[0]:g} µm): sort with "
                             "--motion off, or give the channels' positions (a probe file or channel_positions.npy)")


def estimate_motion(recording: PreprocessedRecording, motion: str, n_jobs: int = 1):
    """SpikeInterface's Motion of `recording` (preprocessed) by the preset `motion` names (MOTION_PRESETS)."""
    from spikeinterface.preprocessing import compute_motion

    view = to_spikeinterface_recording(recording)
    # Threads, not processes: the view reads this process's recording and is not rebuilt from a file.
    return compute_motion(view, preset=MOTION_PRESETS[motion], n_jobs=n_jobs, pool_engine="thread",
                          progress_bar=False, chunk_duration="1s")


class MotionCorrectedRecording(PreprocessedRecording):
    """A preprocessed recording with its drift undone: each read band-passes the channels the asked ones
    are interpolated from, moves the samples back by the estimated motion (kriging), then common-references
    as its parent would (a whole-probe read)."""

    def __init__(self, preprocessed: PreprocessedRecording, motion, description: str) -> None:
        super().__init__(preprocessed.parent, preprocessed.freq_min, preprocessed.freq_max,
                         preprocessed.common_reference)
        self.format_name = preprocessed.format_name
        self.positions_source = preprocessed.positions_source
        self.motion = motion
        self.description = description  # what was estimated, in words, for reports
        self._locations = np.asarray(self.channel_positions, dtype=np.float64)
        self._kernels: dict[int, np.ndarray] = {}  # motion time bin -> interpolation kernel, oldest first
        self._kernels_lock = threading.Lock()  # the stages read from several threads at once

    def _bins(self, samples: np.ndarray) -> np.ndarray:
        """The motion time bin of each sample."""
        edges = self.motion.temporal_bin_edges_s[0]
        return np.clip(np.searchsorted(edges, samples / self.sampling_rate, side="right") - 1, 0, len(edges) - 2)

    def _sources(self, bins: np.ndarray, channels: np.ndarray) -> np.ndarray:
        """The recorded channels that weigh in `channels`' corrected values in any of `bins` (weights under
        KERNEL_FLOOR of a column's largest left out): a few channels' snippets need not band-pass the probe."""
        needed = np.zeros(self.n_channels, dtype=bool)
        for time_bin in np.unique(bins).tolist():
            weights = np.abs(self._kernel(time_bin)[:, channels])
            needed |= np.any(weights >= KERNEL_FLOOR * weights.max(axis=0, keepdims=True), axis=1)
        return np.flatnonzero(needed)

    def _moved_back(self, traces: np.ndarray, samples: np.ndarray, sources: np.ndarray, channels: np.ndarray
                    ) -> np.ndarray:
        """`traces` (n, len(sources)) band-passed, each row at its sample (any order), with the drift undone
        on `channels`: each row times the interpolation kernel of its motion time bin."""
        bins = self._bins(samples)
        out = np.empty((len(traces), len(channels)), dtype=np.float32)
        order = np.argsort(bins, kind="stable")
        for rows in np.split(order, np.flatnonzero(np.diff(bins[order])) + 1):
            if len(rows):
                out[rows] = traces[rows] @ self._kernel(int(bins[rows[0]]))[np.ix_(sources, channels)]
        return out

    def _kernel(self, time_bin: int) -> np.ndarray:
        """(n_channels, n_channels) float32: the recorded channels' weights in each channel's corrected
        value during motion time bin `time_bin` (SpikeInterface's kriging towards where the drift moved the
        channels; interpolate_motion_on_traces computes the same, again on every call). A snippet batch
        spans hundreds of bins: the last KERNELS_KEPT are kept."""
        kernel = self._kernels.get(time_bin)
        if kernel is None:
            from spikeinterface.preprocessing import get_spatial_interpolation_kernel

            dim = self.motion.dim
            centre = self.motion.temporal_bins_s[0][time_bin]
            moved = self._locations.copy()
            moved[:, dim] += self.motion.get_displacement_at_time_and_depth(
                np.full(self.n_channels, centre), self._locations[:, dim], segment_index=0)
            kernel = np.asarray(get_spatial_interpolation_kernel(self._locations, moved, method="kriging",
                                                                 dtype="float32", **KRIGING), dtype=np.float32)
            with self._kernels_lock:
                if len(self._kernels) >= KERNELS_KEPT:
                    self._kernels.pop(next(iter(self._kernels)))
                self._kernels[time_bin] = kernel
        return kernel

    def _read_block(self, start, stop, channel_index):
        every = np.arange(self.n_channels)
        traces = self._moved_back(super().band_passed(start, stop, every), np.arange(start, stop), every, every)
        if self.common_reference:
            traces = common_median_reference(traces)
        return np.ascontiguousarray(traces if channel_index is None else traces[:, channel_index])

    def band_passed(self, start: int, stop: int, channels: np.ndarray) -> np.ndarray:
        channels = np.asarray(channels, dtype=np.int64)
        samples = np.arange(start, stop)
        sources = self._sources(self._bins(samples), channels)
        return self._moved_back(super().band_passed(start, stop, sources), samples, sources, channels)

    def snippets(self, starts: np.ndarray, length: int, channels: np.ndarray) -> np.ndarray:
        starts = np.asarray(starts, dtype=np.int64)
        channels = np.asarray(channels, dtype=np.int64)
        out = np.empty((len(starts), length, len(channels)), dtype=np.float32)
        for first in range(0, len(starts), SNIPPETS_PER_STEP):
            part = starts[first:first + SNIPPETS_PER_STEP]
            samples = (part[:, None] + np.arange(length)[None, :]).ravel()  # each row of the batch at its own time
            sources = self._sources(self._bins(samples), channels)
            windows = super().snippets(part, length, sources)  # (n, length, sources)
            moved = self._moved_back(windows.reshape(-1, len(sources)), samples, sources, channels)
            out[first:first + len(part)] = moved.reshape(len(part), length, len(channels))
        return out

    def __repr__(self) -> str:
        return f"MotionCorrectedRecording({self.description} of {super().__repr__()})"


def motion_corrected(preprocessed: PreprocessedRecording, motion: str, n_jobs: int = 1,
                     report: Callable[[str], None] | None = None) -> MotionCorrectedRecording:
    """`preprocessed` with its drift (estimated as `motion` says: "rigid" or "nonrigid") undone."""
    estimated = estimate_motion(preprocessed, motion, n_jobs)
    displacement = np.concatenate([np.ravel(d) for d in estimated.displacement])
    description = (f"{motion} motion correction (SpikeInterface's {MOTION_PRESETS[motion]}): drift "
                   f"{np.min(displacement):.1f} to {np.max(displacement):.1f} µm")
    if report is not None:
        report(description)
    return MotionCorrectedRecording(preprocessed, estimated, description)
