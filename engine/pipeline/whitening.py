"""Spatial whitening: the sort sees each sample's channels decorrelated, as Kilosort's does.

On a probe, what the channels share dominates what each holds alone: SpikeInterface's
32-channel recordings have neighbouring channels 0.77-0.86 correlated over the whole
band-passed recording, most of it the big neurons' spikes, which reach many channels at once.
The lasso fits a window's samples by least squares, as if every channel's deviation were
independent; a filter then gains most by explaining the directions where the recording varies
most, and a small neuron's spikes and a big one's spike-to-spike variation are fitted in the
same metric. Whitening (ZCA: the covariance's eigenvectors, each scaled by one over the square
root of its eigenvalue plus a regulariser) evens out the directions' weights, and is the
same linear map on every sample, so it commutes with the band-pass and a filter learned on
whitened data is a whitened spike shape.

Measured on SpikeInterface's 32-channel probes (24 units, 5 min, recording seeds 0-7, the
benchmark's sorter seeds, one sort each on a quiet machine), against stop 59's sorts: every
recording sorted more accurately, 0.908 -> 0.913, 0.993 -> 0.997, 0.954 -> 0.958, 0.870 ->
0.873, 0.954 -> 0.957, 0.913 -> 0.916, 0.996 -> 0.998, 0.990 -> 0.993, most units now at
0.998-1.000; seed 4 faster (42.4 -> 28.1 s: 29 filters instead of 38, the spike-to-spike
variation its residual filters coded now weighing little), seed 6 slower, and over the eight
the benchmark's ratio to tridesclous2's time 0.79 against 0.80 unwhitened. The regulariser
matters: at 0.3 × the mean eigenvalue a 4-SNR neuron of seed 1 went 0.97 -> 0.62 (its spatial
pattern is the big neurons' and its peak fell from 4.0 to 2.6 σ), at 1 × seed 1 scored 0.982, at 10 ×
0.994 (seed 4 0.955, 37.6 s); WHITENING_REGULARISATION keeps the largest directions at a
fraction of their weight rather than flattening them. (That sweep whitened outside the engine;
the accuracies at the top are the engine's at 3 ×.) In the engine, 1.5 × against 3 ×,
the eight recordings side by side in one process: 0.9117 / 0.9128, 0.9970 / 0.9965, 0.9577 /
0.9576, 0.8739 / 0.8734, 0.9578 / 0.9567, 0.9157 / 0.9164, 0.9980 / 0.9983, 0.9964 / 0.9928
(seed 7's 3.9-SNR neuron 0.932 against 0.862), in 193 s against 208 s (7 of 8 faster, 1-4
fewer filters); at 1 × seed 1's 4-SNR neuron fell to 0.931 (0.960 at 1.5 ×), so 1.5 × it is.
On 4 channels it helped the simulator's tetrode (0.989 -> 0.993) and hurt SpikeInterface's (0.963 -> 0.955: its 3-SNR neuron and 5-SNR
look-alike traded more spikes). Nor did it help SpikeInterface's 8- and 16-channel probes (5 min,
8 and 12 units, seeds 0-3, unwhitened/whitened, one sort each): 0.873/0.874, 0.873/0.874,
0.749/0.749, 0.981/0.872 and 0.966/0.903, 0.823/0.831, 0.901/0.909, 0.983/0.898, a neuron lost on
one and two of four; on its 24-channel ones (18 units) every recording sorted better, 0.798/0.811,
0.994/0.999, 0.939/0.944, 0.938/0.941, faster (15-16 s against 19-21 s) and in fewer units. So it
starts at WHITENING_MIN_CHANNELS (24; until stop 61, 8: no probe under 32 channels of
SpikeInterface's had been measured).

On SpikeInterface's 64-channel probe (48 units, 5 min, seed 0, one sort each on a quiet machine, 3 ×)
unwhitened 0.900 in 133.5 s, whitened 0.927 in 86.8 s (each channel with its 32 nearest) and
0.927 in 88.4 s (one ZCA of all 64): the same units, 51 units sorted instead of 59.

Above 32 channels each channel is whitened with its WHITENING_NEAREST nearest (`local_whitening`,
Kilosort's practice), so that a few channels' snippets read only their neighbourhoods. At 384
channels that local whitening (3 ×) gained nothing on the 60-s Neuropixels-like probe (100 units; 0.9201
against 0.9200 unwhitened) and cost 71.0 s against 56.8 s (one sort each, load 1.5-1.7: the
covariance, and whole-probe reads mixing 384 channels), so the automatic choice stops at
WHITENING_MAX_CHANNELS; `whiten=True` whitens any probe.

On short recordings it could cost a whole neuron. On the simulator's probes (16 and 32 channels,
5-10 units) whitened sorts of 10 s over-split every neuron (seeds 11-14: 0.51-0.79 unwhitened,
0.11-0.39 whitened), and of 60 s lost one neuron of seed 11 on both probes (0.977 -> 0.950 and
0.995 -> 0.897: one neuron in five units of 126-415 spikes, 0.99 alike, that the merge's
refractory test could not join on so few spikes) while seeds 12 and 13 came out even; from
2 min on whitening was even or better every time (the simulator's 120-s and 300-s probes,
0.996 -> 0.998, 0.978 -> 0.979, 0.986 -> 0.993; SpikeInterface's 5-min ones above). The cause
was in the first dictionary, not the whitening as such: whitened, a neuron's shape stands less far
above the noise on each channel, so the means of its clusters were noisier, and the duplicate and
mixed-filter tests (0.97 alike) took one neuron's clusters and k-means halves, 0.89-0.97 alike by
their noise, for different neurons. Compared noise-aware since (engine.model.similarity.
corrected_similarity), the 60-s probes sort whitened as well as unwhitened on 7 of 8 (seeds 11-14,
0.978/0.985, 0.992/0.993, 0.997/0.995, 0.989/0.920 on 16 channels, 0.997/0.997, 0.993/0.996,
0.998/0.998, 0.999/0.998 on 32, unwhitened/whitened) and 10-s ones at 32 channels on 2 of 4 (0.992/0.961,
0.992/0.995, 0.999/0.898, 0.895/0.898: seed 13 lost a neuron, seed 11 part of one). SpikeInterface's 32-channel probes whitened sort
better at 30 and 60 s too (seeds 0-3, unwhitened/whitened: 0.908/0.910, 0.985/0.991, 0.950/0.958,
0.869/0.873 at 30 s; 0.911/0.912, 0.988/0.991, 0.955/0.958, 0.870/0.874 at 60 s), in 22-26 units
for 24 neurons instead of 30-33 and about 30 % faster; the simulator's 30-s 32-channel probes within
0.004, in 10 units instead of 11-14. So the automatic choice asks WHITENING_MIN_DURATION_S = 30 s
(until stop 61, 2 min); at 10 s whitening still loses a neuron now and then.

The sort's outputs stay in the band-passed recording's µV: its templates are unwhitened
(`unwhiten`), and the views draw the recording as it is.
"""

from __future__ import annotations

import functools

import numpy as np

from engine.io.recording import Recording
from engine.pipeline.preprocessing import common_median_reference, estimate_noise_levels, random_chunks

# The regulariser added to every eigenvalue, as a multiple of their mean (the mean channel's variance).
WHITENING_REGULARISATION = 1.5
# Probes with fewer channels are not whitened (the module's docstring: SpikeInterface's 8- and 16-channel
# probes lost a neuron on 1 and 2 of 4, its 24-channel ones all sorted better).
WHITENING_MIN_CHANNELS = 24
# ... nor with more: at 384 channels it gained nothing and cost a quarter more time (the docstring).
WHITENING_MAX_CHANNELS = 64
# ... nor on recordings shorter than this (the docstring: on the simulator's 10-s probes whitened sorts lost
# a neuron now and then; from 30 s on, at 24 channels and more, they were even or better).
WHITENING_MIN_DURATION_S = 30.0
# The covariance is of this many random chunks of this length (or the whole recording, if shorter),
# shortened so that they hold at most WHITENING_MAX_VALUES channels × samples (30 s at 32 channels,
# 2.5 s at 384: 115 MB of float32).
WHITENING_CHUNKS = 30
WHITENING_CHUNK_S = 1.0
WHITENING_MAX_VALUES = 32 * 30 * 30_000
# Each row of the whitening keeps its largest entries holding this share of its squared norm, the rest zero:
# a whitened channel mixes 5-21 channels of a 32-channel probe instead of all 32 (truncated_rows).
WHITENING_ROW_ENERGY = 0.9999
# Each channel is whitened with its this many nearest channels (Kilosort's local whitening): on a probe
# of this many channels or fewer, every channel with all of them (one ZCA of the whole covariance).
WHITENING_NEAREST = 32


# When the automatic choice whitens, in words (the CLI's help, the Training panel's tooltip).
AUTOMATIC_RULE = (f"on probes of {WHITENING_MIN_CHANNELS} to {WHITENING_MAX_CHANNELS} channels recorded for "
                  f"{WHITENING_MIN_DURATION_S:g} s or more")


def whitens(n_channels: int, duration_s: float, requested: bool | None) -> bool:
    """Whether a sort of `n_channels` channels and `duration_s` seconds whitens: `requested` (the config's
    `whiten`), or when None, whether the probe has WHITENING_MIN_CHANNELS to WHITENING_MAX_CHANNELS
    channels and the recording lasts WHITENING_MIN_DURATION_S or more."""
    if requested is not None:
        return bool(requested) and n_channels > 1
    return WHITENING_MIN_CHANNELS <= n_channels <= WHITENING_MAX_CHANNELS and duration_s >= WHITENING_MIN_DURATION_S


def whitening_matrices(covariance: np.ndarray, regularisation: float = WHITENING_REGULARISATION
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(whitening, unwhitening): the regularised ZCA matrix of `covariance` (n_channels, n_channels) and its
    inverse, both symmetric float64. Scaled so that a channel of the mean variance keeps its µV scale
    (the sort's thresholds are in noise σ, measured again on the whitened data)."""
    values, vectors = np.linalg.eigh(np.asarray(covariance, dtype=np.float64))
    values = np.maximum(values, 0.0)
    mean = max(float(values.mean()), 1e-12)
    scale = np.sqrt(mean / (values + regularisation * mean))
    whitening = (vectors * scale) @ vectors.T
    unwhitening = (vectors / scale) @ vectors.T
    return whitening, unwhitening


def local_whitening(covariance: np.ndarray, positions: np.ndarray, n_nearest: int = WHITENING_NEAREST,
                    regularisation: float = WHITENING_REGULARISATION) -> tuple[np.ndarray, np.ndarray]:
    """(whitening, unwhitening) (n_channels, n_channels): each channel's row of the whitening is its row of
    `whitening_matrices` of the covariance of it and its `n_nearest` nearest channels (`positions`), zero
    elsewhere; the unwhitening is its inverse. With `n_nearest` channels or fewer, the whole ZCA."""
    n_channels = len(covariance)
    if n_channels <= n_nearest:
        return whitening_matrices(covariance, regularisation)
    positions = np.asarray(positions, dtype=np.float64)
    distance = np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=2)
    whitening = np.zeros((n_channels, n_channels))
    for channel in range(n_channels):
        # Itself first (distance 0; geometry refuses duplicate positions), then its nearest.
        near = np.argsort(distance[channel], kind="stable")[:n_nearest]
        near = np.concatenate([[channel], near[near != channel][: n_nearest - 1]])
        local, _ = whitening_matrices(covariance[np.ix_(near, near)], regularisation)
        whitening[channel, near] = local[0]
    return whitening, np.linalg.inv(whitening)


def estimate_whitening(recording: Recording, regularisation: float = WHITENING_REGULARISATION,
                       n_chunks: int = WHITENING_CHUNKS, chunk_duration_s: float = WHITENING_CHUNK_S,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`local_whitening` of the covariance of `recording` (a PreprocessedRecording, read band-passed
    without its common reference, as WhitenedRecording mixes it), over random chunks: spikes
    included, as Kilosort's (the directions the big neurons' spikes take are those whitening turns down)."""
    budget_s = WHITENING_MAX_VALUES / (recording.n_channels * recording.sampling_rate)
    chunk_duration_s = min(chunk_duration_s, budget_s / n_chunks)
    traces = random_chunks(_BandPassedOnly(recording), n_chunks, chunk_duration_s, seed)
    centred = traces.astype(np.float64) - traces.mean(axis=0, dtype=np.float64)
    covariance = centred.T @ centred / max(len(centred) - 1, 1)
    whitening, _ = local_whitening(covariance, recording.channel_positions, regularisation=regularisation)
    return truncated_rows(whitening)


def truncated_rows(whitening: np.ndarray, energy: float = WHITENING_ROW_ENERGY) -> tuple[np.ndarray, np.ndarray]:
    """(whitening, unwhitening): each row of `whitening` cut to its largest entries holding `energy` of its
    squared norm (zero elsewhere), and the inverse of that.

    A ZCA row is near-diagonal: on SpikeInterface's 32-channel probes 5-21 channels hold 99.99 % of it.
    Cut there, a few channels' whitened snippets read those channels, not the whole probe; the error, a
    hundredth of a σ at most, is the same in every read, since the cut matrix is the whitening. Measured
    side by side in one process (SpikeInterface's 32-channel probes, seeds 0-7, whole rows / cut): 181.8 s
    against 170.5 s over the eight (faster on 6, seed 6 28.4 -> 24.3 s: its snippet stages, splitting
    units by waveform 2.1 -> 0.2 s, overlapped spikes 1.1 -> 0.5 s), every accuracy within 0.0003
    (0.9117/0.9120, 0.9964/0.9963, 0.9582/0.9579, 0.8739/0.8738, 0.9578/0.9578, 0.9158/0.9157,
    0.9993/0.9994, 0.9960/0.9959); on the 64-channel probe (48 units, seed 0) 0.9198 in 70.5 s against
    0.9277 in 65.4 s, 49 units instead of 52."""
    whitening = np.asarray(whitening, dtype=np.float64)
    if energy >= 1.0:  # every entry (a cumulative sum can reach 1 before the row's smallest ones)
        return whitening, np.linalg.inv(whitening)
    cut = np.zeros_like(whitening)
    for row, values in enumerate(whitening):
        order = np.argsort(-values**2, kind="stable")
        held = np.cumsum(values[order] ** 2) / max(float(values @ values), 1e-300)
        kept = order[: int(np.searchsorted(held, energy)) + 1]
        cut[row, kept] = values[kept]
    return cut, np.linalg.inv(cut)


class _BandPassedOnly(Recording):
    """A PreprocessedRecording's reads without its common reference (its `band_passed`): what is whitened."""

    concurrent_reads = True

    def __init__(self, recording: Recording) -> None:
        super().__init__(recording.sampling_rate, recording.n_channels, recording.n_samples,
                         recording.channel_positions, recording.path, np.float32)
        self.parent = recording

    def _read_block(self, start, stop, channel_index):
        channels = np.arange(self.n_channels) if channel_index is None else channel_index
        return self.parent.band_passed(start, stop, channels)


class WhitenedRecording(Recording):
    """A preprocessed recording seen through a whitening matrix (every channel a mix of all)."""

    concurrent_reads = True  # a matrix product of what the parent reads

    def __init__(self, recording: Recording, whitening: np.ndarray, unwhitening: np.ndarray) -> None:
        super().__init__(recording.sampling_rate, recording.n_channels, recording.n_samples,
                         recording.channel_positions, recording.path, np.float32)
        self.parent = recording
        self.format_name = recording.format_name
        self.positions_source = recording.positions_source
        self.whitening = np.ascontiguousarray(whitening, dtype=np.float32)
        self.unwhitening = np.ascontiguousarray(unwhitening, dtype=np.float32)

    @functools.cached_property
    def noise_levels(self) -> np.ndarray:
        """(n_channels,) float32 noise σ of the whitened traces."""
        return estimate_noise_levels(self)

    def _read_block(self, start, stop, channel_index):
        # Whitened, then common-referenced as the parent would have been: whitening after the reference
        # kept less of the gain (SpikeInterface's 32-channel probe, seeds 1 and 4: 0.9940 and 0.9561
        # against 0.9965 and 0.9568 this way).
        reference = getattr(self.parent, "common_reference", False)
        if channel_index is not None and not reference:
            return self.band_passed(start, stop, channel_index)
        every = np.arange(self.n_channels)
        traces = self.whiten(self.parent.band_passed(start, stop, every))
        if reference:  # the median needs every channel
            traces = common_median_reference(traces, getattr(self.parent, "reference_channels", None))
        return traces if channel_index is None else np.ascontiguousarray(traces[:, channel_index])

    def _support(self, channels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the channels whose whitened values `channels` mix, those rows of the whitening on them)."""
        rows = self.whitening[np.asarray(channels, dtype=np.int64)]
        support = np.flatnonzero(np.any(rows != 0, axis=0))
        return support, np.ascontiguousarray(rows[:, support])

    def band_passed(self, start: int, stop: int, channels: np.ndarray) -> np.ndarray:
        """Samples [start, stop) of `channels`, whitened from the parent's band_passed (without its common
        reference) of the channels they mix."""
        support, rows = self._support(channels)
        return np.ascontiguousarray(self.parent.band_passed(start, stop, support) @ rows.T, dtype=np.float32)

    def snippets(self, starts: np.ndarray, length: int, channels: np.ndarray) -> np.ndarray:
        """(n_starts, length, n_selected): the parent's snippets of the channels `channels` mix, whitened (on a
        384-channel probe, a channel's 32 nearest rather than every channel)."""
        support, rows = self._support(channels)
        return np.ascontiguousarray(self.parent.snippets(starts, length, support) @ rows.T, dtype=np.float32)

    def unwhiten(self, values: np.ndarray, axis: int = -1) -> np.ndarray:
        """`values` with a channel axis (`axis`) of whitened µV, in the parent's µV (float32)."""
        moved = np.moveaxis(np.asarray(values, dtype=np.float32), axis, -1)
        return np.moveaxis(moved @ self.unwhitening.T, -1, axis).astype(np.float32, copy=False)

    def whiten(self, values: np.ndarray, axis: int = -1) -> np.ndarray:
        """`values` with a channel axis (`axis`) of the parent's µV, whitened (float32)."""
        moved = np.moveaxis(np.asarray(values, dtype=np.float32), axis, -1)
        return np.moveaxis(moved @ self.whitening.T, -1, axis).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"WhitenedRecording(of {self.parent!r})"


def unwhitened_sorting(sorting, recording: WhitenedRecording):
    """`sorting` (engine.pipeline.sorting.Sorting) of `recording`'s whitened traces, with its templates in
    the preprocessed recording's µV and each spike's amplitude rescaled as its unit's template peak was.

    The spike times and each template's peak tap stay: the unwhitening mixes channels, not samples, so a
    template covers the same samples of every spike."""
    from dataclasses import replace

    if sorting.templates.size == 0:
        return sorting
    templates = recording.unwhiten(sorting.templates)
    n_units = len(templates)
    taps = (sorting.template_peak_taps if sorting.template_peak_taps is not None
            else np.abs(sorting.templates).max(axis=2).argmax(axis=1))
    units = np.arange(n_units)

    def peaks(shapes: np.ndarray) -> np.ndarray:
        main = np.ptp(shapes, axis=1).argmax(axis=1)
        return np.abs(shapes[units, taps, main])

    ratio = peaks(templates) / np.maximum(peaks(sorting.templates), 1e-12)  # (n_units,)
    amplitudes = sorting.amplitudes * ratio[sorting.spike_units].astype(np.float32)
    return replace(sorting, templates=templates, amplitudes=amplitudes)
