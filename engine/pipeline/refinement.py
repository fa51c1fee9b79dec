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
    residual_correlation: np.ndarray,
    code_index: np.ndarray,
    spike_filters: np.ndarray,
    code_triplets: np.ndarray,
    gram: np.ndarray,
    filter_peak_taps: np.ndarray,
    prior: AmplitudePrior,
    max_shift: int,
    candidates_of: list[np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relabel the spikes of one chunk.

    residual_correlation: (n_filters, n_codes) Hᵀ(y − Hx): the correlation of every filter, at every
      code index, with what the kept spikes leave of the noise-normalised chunk.
    code_index: (n_spikes,) int code index of each spike (filter placed at
      [i, i + n_taps)); spike_filters: (n_spikes,) its filter;
    code_triplets: (n_spikes, 3) codes at i - 1, i, i + 1 (its own contribution).
    gram: (n_filters, n_filters, 2·n_taps − 1) the filters' Gram tensor (working_set.gram_tensor), unit-norm filters.
    candidates_of: per filter, the filters its spikes may take (`filters_sharing_channels`).
    Returns (times relative to the chunk, filters, amplitudes) per spike.

    A candidate's fit to the spike with its own contribution put back is the residual's correlation
    with the candidate where it would sit, plus the spike's own codes seen through the candidate (their
    Gram entries): no window of the signal is cut or correlated again. (Correlating each spike's
    window with every candidate was 15 % of sorting a 32-channel probe.) Only filters sharing the
    spike's channels are candidates: on a probe a spike is never fitted with a filter on the other
    end of the shank.
    """
    n_spikes = len(code_index)
    if n_spikes == 0:
        return code_index.copy(), spike_filters.copy(), np.zeros(0, np.float32)
    peaks = np.asarray(filter_peak_taps, dtype=np.int64)
    spike_times = code_index + peaks[spike_filters]  # extremum sample, chunk-relative
    best_time, best_filter = spike_times.copy(), spike_filters.astype(np.int32)
    best_amplitude = np.zeros(n_spikes)
    for k in np.unique(spike_filters):
        group = np.flatnonzero(spike_filters == k)
        times, labels, amplitudes = _refit(residual_correlation, code_index[group], k, code_triplets[group], gram,
                                           peaks, candidates_of[k], prior, max_shift)
        best_time[group], best_filter[group], best_amplitude[group] = times, labels, amplitudes
    return best_time, best_filter, best_amplitude.astype(np.float32)


def _refit(residual_correlation: np.ndarray, code_index: np.ndarray, own: int, code_triplets: np.ndarray,
           gram: np.ndarray, peaks: np.ndarray, candidates: np.ndarray, prior: AmplitudePrior,
           max_shift: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best (time, filter, amplitude) among `candidates` for spikes of filter `own`, each at every shift
    within ±max_shift of its extremum."""
    n_codes = residual_correlation.shape[1]
    n_taps = (gram.shape[2] + 1) // 2
    spike_times = code_index + peaks[own]
    shifts = np.arange(-max_shift, max_shift + 1)
    # Code index where candidate c puts its extremum at spike time + shift: (n_spikes, n_candidates, n_shifts).
    at = spike_times[:, None, None] + shifts[None, None, :] - peaks[candidates][None, :, None]
    valid = (at >= 0) & (at < n_codes)
    at = np.clip(at, 0, n_codes - 1)
    projection = residual_correlation[candidates[None, :, None], at].astype(np.float64)
    # Put the spike's own codes back: ⟨h_c at `at`, h_own at i + delta⟩ = G[c, own, i + delta − at + n_taps − 1].
    own_rows = gram[candidates, own].astype(np.float64)  # (n_candidates, 2·n_taps − 1)
    for delta in (-1, 0, 1):
        lag = (code_index + delta)[:, None, None] - at + n_taps - 1
        reached = (lag >= 0) & (lag < own_rows.shape[1])
        entries = own_rows[np.arange(len(candidates))[None, :, None], np.clip(lag, 0, own_rows.shape[1] - 1)]
        projection += code_triplets[:, delta + 1].astype(np.float64)[:, None, None] * np.where(reached, entries, 0.0)
    # The fit's cost, less what every candidate and shift of one spike share (the window's energy):
    # −2·a·p + a² + (a − μ)²/σ² + log σ², with a the prior-weighted amplitude.
    inverse_variance = (1.0 / prior.variances[candidates])[None, :, None]
    means = prior.means[candidates][None, :, None]
    amplitude = (projection + means * inverse_variance) / (1.0 + inverse_variance)
    cost = (-2.0 * amplitude * projection + amplitude**2
            + (amplitude - means) ** 2 * inverse_variance + np.log(prior.variances[candidates])[None, :, None])
    cost = np.where(valid, cost, np.inf).reshape(len(code_index), -1)
    best = np.argmin(cost, axis=1)  # the first of equal costs: candidates in order, shifts from −max_shift
    column, shift_index = np.unravel_index(best, valid.shape[1:])
    return (spike_times + shifts[shift_index], candidates[column],
            amplitude.reshape(len(code_index), -1)[np.arange(len(code_index)), best])
