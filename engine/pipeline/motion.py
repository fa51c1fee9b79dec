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
of the recording is moved back by SpikeInterface's kriging interpolation (interpolate_motion_on_traces;
engine/pipeline/kriging.py), chunk by chunk: a channel's corrected samples are a weighted sum of its
neighbours' where the probe had moved them, and a channel the drift moves past the probe's end is filled
from those that stay on it. It needs SpikeInterface (the `formats` extra) and channels at two depths or more.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

import numpy as np

from engine.io.recording import Recording, RecordingError
from engine.io.spikeinterface_adapter import to_spikeinterface_recording
from engine.pipeline.kriging import Kriging, fill_weights, with_filled_columns, without_small_weights
from engine.pipeline.preprocessing import PreprocessedRecording, common_median_reference

# `--motion` words -> SpikeInterface's compute_motion preset (None: no correction).
MOTION_PRESETS = {"off": None, "rigid": "rigid_fast", "nonrigid": "dredge_fast"}
INSTALL_HINT = "pip install 'sparsort[formats]' (SpikeInterface estimates the drift)"
# Whole-probe interpolation kernels kept, one per motion time bin (n_channels² float32: 590 kB at 384 channels);
# a few channels' weights are computed afresh, which costs less than keeping them.
KERNELS_KEPT = 64
# A channel the drift moves past the probe's end (by more than this) in some time bin is filled from the channels
# that stay on it, in every bin. SpikeInterface's default drops such channels; a sort keeps every channel, and
# read past the end they fade (SpikeInterface's force_extrapolate): SpikeInterface's drifting generator, seeds 0-3,
# non-rigid 0.793, 0.858, 0.827, 0.833 faded, 0.842, 0.890, 0.810, 0.860 filled (zeros there sorted 0.165).
MOVED_OUT_UM = 0.0
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
    from spikeinterface.core import get_global_job_kwargs, set_global_job_kwargs
    from spikeinterface.preprocessing import compute_motion

    view = to_spikeinterface_recording(recording)
    # compute_motion's peak detection asks SpikeInterface's noise estimate, which reads chunks drawn without a
    # seed: a recording's drift came out different on every run (to ~0.1 µm; its sorts 0.822-0.857 on one
    # recording). Given this recording's own, seeded estimate (the same MAD / 0.6745; the view's gains are 1,
    # so raw is µV), the estimate is the same on every run, in threads or not.
    view.set_property("noise_level_mad_raw", np.asarray(recording.noise_levels, dtype=np.float64))
    # compute_motion's noise estimate draws SpikeInterface's global progress bar (on by default) on stderr:
    # off while it runs, the caller's setting back after.
    before = get_global_job_kwargs()
    set_global_job_kwargs(progress_bar=False)
    try:
        # Threads, not processes: the view reads this process's recording and is not rebuilt from a file.
        return compute_motion(view, preset=MOTION_PRESETS[motion], n_jobs=n_jobs, pool_engine="thread",
                              progress_bar=False, chunk_duration="1s")
    finally:
        set_global_job_kwargs(**before)


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
        self._kriging = Kriging(self._locations)
        # Channels the drift moves past the probe's end in some time bin: read where it moved them, they show a
        # neuron near the end at a strength that changes with the drift (the units within 20 µm of the ends were
        # what a corrected sort lost). Filled instead from the channels that stay on the probe, as a flat channel is
        # (engine/pipeline/bad_channels.py), and left out of the reference's median.
        self.moved_out = self._channels_moved_out()
        staying = np.setdiff1d(np.arange(self.n_channels), self.moved_out)
        if not len(staying):  # a drift past every channel: nothing to fill from, each read where it moved
            self.moved_out, staying = staying, self.moved_out
        self._fill_sources, self._fill = fill_weights(self._locations, self.moved_out, staying)
        if len(self.moved_out):
            reference = np.arange(self.n_channels) if self.reference_channels is None else self.reference_channels
            self.reference_channels = np.setdiff1d(reference, self.moved_out)
        self._kernels: OrderedDict[int, np.ndarray] = OrderedDict()  # time bin -> whole-probe kernel, oldest first
        self._kernels_lock = threading.Lock()  # the stages read from several threads at once

    def _bins(self, samples: np.ndarray) -> np.ndarray:
        """The motion time bin of each sample."""
        edges = self.motion.temporal_bin_edges_s[0]
        return np.clip(np.searchsorted(edges, samples / self.sampling_rate, side="right") - 1, 0, len(edges) - 2)

    def _channels_moved_out(self) -> np.ndarray:
        """The channels that some motion time bin's drift moves past the probe's end (along its depth)."""
        dim = self.motion.dim
        depths = self._locations[:, dim]
        shifts = self.motion.get_displacement_at_time_and_depth(self.motion.temporal_bins_s[0], depths,
                                                                segment_index=0, grid=True)  # (n_channels, n_bins)
        moved = depths[:, None] + shifts
        low, high = self._kriging.low[dim] - MOVED_OUT_UM, self._kriging.high[dim] + MOVED_OUT_UM
        return np.flatnonzero(np.any((moved < low) | (moved > high), axis=1))

    def _weights(self, time_bin: int, channels: np.ndarray) -> np.ndarray:
        """(n_channels, len(channels)) float32: each recorded channel's weight in `channels`' corrected values
        during motion time bin `time_bin` — SpikeInterface's kriging kernel's columns (a column depends only
        on where the drift moved its own channel), weights under kriging.WEIGHT_FLOOR of a column's largest zeroed; a
        channel moved out, its fill's sources' columns times the fill."""
        whole = len(channels) == self.n_channels and np.array_equal(channels, np.arange(self.n_channels))
        if whole and (kernel := self._kernels.get(time_bin)) is not None:
            return kernel
        # A moved-out channel's column is its fill's sources' columns times the fill, as a flat channel's samples are.
        kernel = with_filled_columns(lambda direct: self._moved_weights(time_bin, direct), channels, self.moved_out,
                                     self._fill_sources, self._fill)
        if whole:
            with self._kernels_lock:
                if len(self._kernels) >= KERNELS_KEPT:
                    self._kernels.popitem(last=False)
                self._kernels[time_bin] = kernel
        return kernel

    def _moved_weights(self, time_bin: int, channels: np.ndarray) -> np.ndarray:
        """`_weights` of `channels` read where the drift moved them, past the probe's end or not."""
        dim = self.motion.dim
        moved = self._locations[channels].copy()
        moved[:, dim] += self.motion.get_displacement_at_time_and_depth(
            np.full(len(channels), self.motion.temporal_bins_s[0][time_bin]), moved[:, dim], segment_index=0)
        weights = without_small_weights(self._kriging.weights(moved, scale_outside=False))  # (n_channels, len)
        return np.ascontiguousarray(weights, dtype=np.float32)

    def _weights_by_bin(self, bins: np.ndarray, channels: np.ndarray) -> tuple[dict[int, np.ndarray], np.ndarray]:
        """({time bin: kernel columns of `channels`} for every bin in `bins`, the recorded channels any of
        them weighs): a few channels' snippets need not band-pass the probe."""
        weights = {int(time_bin): self._weights(int(time_bin), channels) for time_bin in np.unique(bins)}
        needed = np.zeros(self.n_channels, dtype=bool)
        for kernel in weights.values():
            needed |= np.any(kernel != 0.0, axis=1)
        return weights, np.flatnonzero(needed)

    def _moved_back(self, traces: np.ndarray, bins: np.ndarray, weights: dict[int, np.ndarray],
                    sources: np.ndarray) -> np.ndarray:
        """`traces` (n, len(sources)) band-passed, each row in its motion time bin `bins` (any order), with
        the drift undone: each row times its bin's kernel columns `weights`, restricted to `sources`."""
        n_out = next(iter(weights.values())).shape[1]
        out = np.empty((len(traces), n_out), dtype=np.float32)
        order = np.argsort(bins, kind="stable")
        for rows in np.split(order, np.flatnonzero(np.diff(bins[order])) + 1):
            if len(rows):
                out[rows] = traces[rows] @ weights[int(bins[rows[0]])][sources]
        return out

    def _read_block(self, start, stop, channel_index):
        every = np.arange(self.n_channels)
        samples = np.arange(start, stop)
        bins = self._bins(samples)
        weights, _ = self._weights_by_bin(bins, every)
        traces = self._moved_back(super().band_passed(start, stop, every), bins, weights, every)
        if self.common_reference:
            traces = common_median_reference(traces, self.reference_channels)
        return np.ascontiguousarray(traces if channel_index is None else traces[:, channel_index])

    def band_passed(self, start: int, stop: int, channels: np.ndarray) -> np.ndarray:
        channels = np.asarray(channels, dtype=np.int64)
        bins = self._bins(np.arange(start, stop))
        weights, sources = self._weights_by_bin(bins, channels)
        return self._moved_back(super().band_passed(start, stop, sources), bins, weights, sources)

    def snippets(self, starts: np.ndarray, length: int, channels: np.ndarray) -> np.ndarray:
        starts = np.asarray(starts, dtype=np.int64)
        channels = np.asarray(channels, dtype=np.int64)
        out = np.empty((len(starts), length, len(channels)), dtype=np.float32)
        for first in range(0, len(starts), SNIPPETS_PER_STEP):
            part = starts[first:first + SNIPPETS_PER_STEP]
            bins = self._bins((part[:, None] + np.arange(length)[None, :]).ravel())  # each row at its own time
            weights, sources = self._weights_by_bin(bins, channels)
            windows = super().snippets(part, length, sources)  # (n, length, sources)
            moved = self._moved_back(windows.reshape(-1, len(sources)), bins, weights, sources)
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
    corrected = MotionCorrectedRecording(preprocessed, estimated, description)
    if len(corrected.moved_out):
        corrected.description += (f"; {len(corrected.moved_out)} channels the drift moves past the probe's end "
                                  f"({', '.join(str(c) for c in corrected.moved_out[:12].tolist())}"
                                  f"{' ...' if len(corrected.moved_out) > 12 else ''}) filled from those that stay")
    if report is not None:
        report(corrected.description)
    return corrected
