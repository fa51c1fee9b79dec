"""Second look at every spike: which filter explains it best, all else fixed?

The lasso decides between similar filters on shape alone, and inside an
overlap it solves for all spikes at once, so a spike of one neuron is
sometimes coded by a look-alike filter (measured on the demo: most errors
were spikes of the two most similar units, 0.89 alike, swapped within 1 ms
of another spike). Here each spike is taken out of the reconstruction, the
other spikes stay subtracted, and every filter at every shift within ±1 dead
time is fitted to what is left with a Gaussian prior on that filter's
amplitude (its spikes' amplitudes on the training pool). The least-cost
filter and shift win. This is the maximum a posteriori label of one spike
given its neighbours, and it uses what shape alone ignores: neurons differ
in amplitude too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.pipeline.amplitude_split import main_amplitude_group, spikes_of_each_filter
from engine.pipeline.params import AMPLITUDE_SPLIT_MIN_FRACTION, MIN_AMPLITUDE_SPIKES, MIN_SPLIT_SPIKES


@dataclass
class AmplitudePrior:
    means: np.ndarray  # (n_filters,) float median code amplitude (noise-σ units)
    variances: np.ndarray  # (n_filters,) float amplitude variance, floored

    @classmethod
    def from_events(cls, amplitudes: np.ndarray, filters: np.ndarray, n_filters: int, floor: float = 0.25) -> "AmplitudePrior":
        means = np.ones(n_filters)
        variances = np.full(n_filters, 1e6)  # a filter with no spikes gets a flat prior
        for k, spikes in enumerate(spikes_of_each_filter(filters, n_filters)):
            mine = amplitudes[spikes]
            if mine.size >= MIN_AMPLITUDE_SPIKES:
                # A filter whose spikes are two neurons of its shape at two sizes has the prior of
                # the one with more spikes: a prior over both was so wide that it did not hold the
                # other's spikes off this filter (on SpikeInterface's tetrode, a 7.8-SNR unit's spikes
                # went half to its own filter, half to a 3x bigger unit's of the same shape).
                mine = main_amplitude_group(mine, MIN_SPLIT_SPIKES, AMPLITUDE_SPLIT_MIN_FRACTION)
                median = float(np.median(mine))
                spread = 1.4826 * float(np.median(np.abs(mine - median)))  # robust σ
                means[k], variances[k] = median, max(spread**2, floor)
        return cls(means, variances)


def filters_sharing_channels(filters: np.ndarray) -> list[np.ndarray]:
    """For each filter, the filters (itself included) that share a channel with it: what its spikes may
    be relabelled to. filters: (n_filters, n_channels, n_taps).

    Not only look-alikes: on a 32-channel probe, keeping only the filters at least 0.1 alike (11 of
    28 per filter) lowered one unit's accuracy from 0.82 to 0.78; the lasso sometimes codes a spike
    with a filter that barely resembles its neuron's."""
    return [np.flatnonzero(row) for row in channel_sharing(filters)]


def channel_sharing(filters: np.ndarray) -> np.ndarray:
    """(n_filters, n_filters) bool: whether two filters are non-zero on a common channel.
    filters: (n_filters, n_channels, n_taps)."""
    on_channel = np.any(np.asarray(filters) != 0, axis=2).astype(np.int32)  # (n_filters, n_channels)
    return (on_channel @ on_channel.T) > 0


def refine_spikes(
    signal: np.ndarray,
    reconstruction: np.ndarray,
    code_index: np.ndarray,
    spike_filters: np.ndarray,
    code_triplets: np.ndarray,
    filters: np.ndarray,
    filter_peak_taps: np.ndarray,
    prior: AmplitudePrior,
    max_shift: int,
    candidates_of: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relabel the spikes of one chunk.

    signal, reconstruction: (n_channels, n) noise-normalised chunk and H x.
    code_index: (n_spikes,) int code index of each spike (filter placed at
      [i, i + n_taps)); spike_filters: (n_spikes,) its filter;
    code_triplets: (n_spikes, 3) codes at i - 1, i, i + 1 (its own contribution).
    filters: (n_filters, n_channels, n_taps) unit norm.
    candidates_of: per filter, the filters its spikes may take (`filters_sharing_channels`, computed when None).
    Returns (times relative to the chunk, filters, amplitudes) per spike.

    The spikes of one filter are refitted together, with the filters sharing its channels only and on
    their channels only: on a probe a spike is never fitted with a filter on the other end of the
    shank (at 384 channels every filter on every channel would be ~10⁹ products per spike).
    """
    n_spikes = len(code_index)
    if n_spikes == 0:
        return code_index.copy(), spike_filters.copy(), np.zeros(0, np.float32)
    if candidates_of is None:
        candidates_of = filters_sharing_channels(filters)
    peaks = np.asarray(filter_peak_taps, dtype=np.int64)
    spike_times = code_index + peaks[spike_filters]  # extremum sample, chunk-relative
    # Padded once, wide enough for any group's windows (see _refit), which read only their channels.
    margin = 2 * (int(peaks.max()) + 2 * max_shift + filters.shape[2]) - int(peaks.min())
    residual = np.pad(signal - reconstruction, ((0, 0), (margin, margin)))
    on_channel = np.any(filters != 0, axis=2)  # (n_filters, n_channels)
    best_time, best_filter = spike_times.copy(), spike_filters.astype(np.int32)
    best_amplitude = np.zeros(n_spikes)
    for k in np.unique(spike_filters):
        group = np.flatnonzero(spike_filters == k)
        candidates = candidates_of[k]
        channels = np.flatnonzero(on_channel[candidates].any(axis=0))
        times, labels, amplitudes = _refit(
            residual, margin, channels, code_index[group], k, code_triplets[group],
            filters[np.ix_(candidates, channels)], peaks, candidates, prior, max_shift)
        best_time[group], best_filter[group], best_amplitude[group] = times, labels, amplitudes
    return best_time, best_filter, best_amplitude.astype(np.float32)


def _refit(residual: np.ndarray, margin: int, channels: np.ndarray, code_index: np.ndarray, own: int,
           code_triplets: np.ndarray, candidate_filters: np.ndarray, peaks: np.ndarray, candidates: np.ndarray,
           prior: AmplitudePrior, max_shift: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best (time, filter, amplitude) among `candidates` for spikes of filter `own` (one of them), on
    `channels` of `residual` (all channels, padded by `margin` samples each side);
    candidate_filters: (n_candidates, those channels, n_taps). Only the candidates' filters and the
    spikes' windows are copied: at 384 channels every filter on a group's channels, or the group's
    channels of the whole chunk, was ~10 MB a group."""
    n_spikes = len(code_index)
    n_taps = candidate_filters.shape[2]
    spike_times = code_index + peaks[own]
    # One window per spike, wide enough for every candidate at every shift.
    lead = int(peaks[candidates].max()) + max_shift
    width = n_taps + 2 * max_shift + int(peaks[candidates].max() - peaks[candidates].min())
    starts = spike_times - lead  # (n_spikes,)
    offsets = starts[:, None] + margin + np.arange(width)[None, :]  # (n_spikes, width)
    windows = residual[channels[:, None, None], offsets[None]].transpose(1, 0, 2).copy()  # (n_spikes, n_channels, width)
    # Put each spike's own contribution back: its code at i - 1, i, i + 1.
    own_filter = candidate_filters[int(np.searchsorted(candidates, own))]  # (n_channels, n_taps)
    for delta in (-1, 0, 1):
        # Window offset of that code's first tap: code_index + delta − starts, the same for every spike
        # (each window starts `lead` before its spike), so one slice of all windows takes it.
        place = lead - int(peaks[own]) + delta
        first, last = max(place, 0), min(place + n_taps, width)
        if first < last:
            windows[:, :, first:last] += code_triplets[:, delta + 1][:, None, None] * own_filter[:, first - place : last - place]
    # Inner product of every candidate at every position of the window: a cross-correlation, which
    # torch runs without materialising the (spikes × channels × positions × taps) windows einsum needed.
    with torch.no_grad():
        fit = torch.nn.functional.conv1d(torch.from_numpy(windows), torch.from_numpy(
            np.ascontiguousarray(candidate_filters, dtype=np.float32))).numpy()  # (n_spikes, n_candidates, n_positions)
    energy = np.einsum("sct,sct->s", windows, windows).astype(np.float64)
    # Position lead + shift − peak_k places filter k's extremum at spike time + shift.
    shifts = np.arange(-max_shift, max_shift + 1)
    positions = lead + shifts[None, :] - peaks[candidates][:, None]  # (n_candidates, n_shifts)
    valid = (positions >= 0) & (positions < fit.shape[2])  # (n_candidates, n_shifts)
    projection = np.take_along_axis(fit, np.clip(positions, 0, fit.shape[2] - 1)[None], axis=2).astype(np.float64)
    inverse_variance = (1.0 / prior.variances[candidates])[None, :, None]
    means = prior.means[candidates][None, :, None]
    amplitude = (projection + means * inverse_variance) / (1.0 + inverse_variance)
    cost = (energy[:, None, None] - 2.0 * amplitude * projection + amplitude**2
            + (amplitude - means) ** 2 * inverse_variance + np.log(prior.variances[candidates])[None, :, None])
    cost = np.where(valid[None], cost, np.inf).reshape(n_spikes, -1)
    best = np.argmin(cost, axis=1)  # the first of equal costs: candidates in order, shifts from −max_shift
    column, shift_index = np.unravel_index(best, positions.shape)
    return (spike_times + shifts[shift_index], candidates[column],
            amplitude.reshape(n_spikes, -1)[np.arange(n_spikes), best])
