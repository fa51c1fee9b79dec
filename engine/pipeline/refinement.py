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

import numba
import numpy as np

from engine.model.pairs import ragged
from engine.pipeline.amplitude_split import main_amplitude_group
from engine.pipeline.params import AMPLITUDE_SPLIT_MIN_FRACTION, MIN_AMPLITUDE_SPIKES, MIN_SPLIT_SPIKES
from engine.pipeline.sorting import spikes_of_each_filter


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
    candidate_starts, candidate_list = ragged(candidates_of)
    variances = np.asarray(prior.variances, dtype=np.float64)
    times = np.empty(n_spikes, dtype=np.int64)
    labels = np.empty(n_spikes, dtype=np.int32)
    amplitudes = np.empty(n_spikes, dtype=np.float64)
    _refit(np.ascontiguousarray(residual_correlation, dtype=np.float32), np.asarray(code_index, np.int64),
           np.asarray(spike_filters, np.int64), np.ascontiguousarray(code_triplets, dtype=np.float64),
           np.ascontiguousarray(gram, dtype=np.float32), np.asarray(filter_peak_taps, np.int64), candidate_starts,
           candidate_list, np.asarray(prior.means, np.float64), 1.0 / variances, np.log(variances), int(max_shift),
           times, labels, amplitudes)
    return times, labels, amplitudes.astype(np.float32)


# nogil: inference codes two batches at once in threads; cache: compiled once per machine.
@numba.njit(nogil=True, cache=True)
def _refit(residual_correlation, code_index, spike_filters, code_triplets, gram, peaks, candidate_starts,
           candidate_list, means, inverse_variances, log_variances, max_shift, best_times, best_filters,
           best_amplitudes):
    """Each spike's best (time, filter, amplitude) among its filter's candidates, at every shift within
    ±max_shift of its extremum: the least cost, the first of equal costs (candidates in order, shifts
    from −max_shift). Written out per spike, candidate and shift (as arrays of spikes × candidates ×
    shifts, with their temporaries, it was 10 % of inference on a 32-channel probe)."""
    n_codes = residual_correlation.shape[1]
    n_lags = gram.shape[2]
    n_taps = (n_lags + 1) // 2
    for spike in range(code_index.size):
        own = spike_filters[spike]
        index = code_index[spike]
        spike_time = index + peaks[own]
        best_cost = np.inf
        # No candidate inside the chunk at any shift (a spike at its very edge, outside its core): amplitude NaN.
        best_time, best_filter, best_amplitude = spike_time - max_shift, candidate_list[candidate_starts[own]], np.nan
        for entry in range(candidate_starts[own], candidate_starts[own + 1]):
            candidate = candidate_list[entry]
            mean, inverse_variance = means[candidate], inverse_variances[candidate]
            for shift in range(-max_shift, max_shift + 1):
                # Code index where the candidate puts its extremum at spike time + shift.
                at = spike_time + shift - peaks[candidate]
                if at < 0 or at >= n_codes:
                    continue
                # Its fit to the spike with the spike's own codes put back: the residual's correlation
                # there plus ⟨h_candidate at `at`, h_own at index + delta⟩ = G[candidate, own, index + delta − at + n_taps − 1].
                projection = np.float64(residual_correlation[candidate, at])
                for delta in range(-1, 2):
                    lag = index + delta - at + n_taps - 1
                    if 0 <= lag < n_lags:
                        projection += code_triplets[spike, delta + 1] * np.float64(gram[candidate, own, lag])
                # The fit's cost, less what every candidate and shift of one spike share (the window's
                # energy): −2·a·p + a² + (a − μ)²/σ² + log σ², with a the prior-weighted amplitude.
                amplitude = (projection + mean * inverse_variance) / (1.0 + inverse_variance)
                miss = amplitude - mean
                cost = (-2.0 * amplitude * projection + amplitude * amplitude + miss * miss * inverse_variance
                        + log_variances[candidate])
                if cost < best_cost:
                    best_cost, best_time, best_filter, best_amplitude = cost, spike_time + shift, candidate, amplitude
        best_times[spike], best_filters[spike], best_amplitudes[spike] = best_time, best_filter, best_amplitude
