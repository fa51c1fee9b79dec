"""Refinement relabels a spike to the filter that explains it best, among the filters on its channels."""

import numpy as np

from engine.model.crsae import CRsAE
from engine.model.gram_rows import GramRows
from engine.model.working_set import gram_tensor, interacting_partners
from engine.pipeline.inference import explained_correlation
from engine.pipeline.refinement import AmplitudePrior, filters_sharing_channels, refine_spikes


def _filters() -> np.ndarray:
    """(3, 4, 20): filters 0 and 1 on channels 0-1 (1 is 0 on channel 1 only), filter 2 on channels 2-3."""
    taps = np.arange(20)
    shape = -np.exp(-0.5 * ((taps - 8) / 1.5) ** 2) + 0.4 * np.exp(-0.5 * ((taps - 13) / 2.5) ** 2)
    filters = np.zeros((3, 4, 20))
    filters[0, 0], filters[0, 1] = shape, 0.6 * shape
    filters[1, 1] = shape
    filters[2, 2], filters[2, 3] = shape, shape
    return (filters / np.linalg.norm(filters, axis=(1, 2), keepdims=True)).astype(np.float32)


def test_only_filters_sharing_a_channel_are_candidates():
    candidates = filters_sharing_channels(_filters())
    assert [c.tolist() for c in candidates] == [[0, 1], [0, 1], [2]]


def _correlation(signal: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """(n_filters, n − n_taps + 1) Hᵀ signal, written out: every filter's inner product at every code index."""
    n_taps = filters.shape[2]
    windows = np.lib.stride_tricks.sliding_window_view(signal, n_taps, axis=1)  # (channels, positions, taps)
    return np.einsum("cpt,kct->kp", windows.astype(np.float64), filters.astype(np.float64))


def _gram(filters: np.ndarray) -> np.ndarray:
    return gram_tensor(CRsAE(filters, np.ones(len(filters), np.float32)))


def _reconstruction(shape, code_index, spike_filters, triplets, filters) -> np.ndarray:
    out = np.zeros(shape)
    n_taps = filters.shape[2]
    for i, k, codes in zip(code_index, spike_filters, triplets):
        for delta, value in zip((-1, 0, 1), codes):
            if value != 0:  # a maximum's neighbour outside the chunk is 0
                out[:, i + delta : i + delta + n_taps] += value * filters[k]
    return out


def _refined(signal, code_index, spike_filters, triplets, filters, peaks, prior, max_shift):
    residual = signal - _reconstruction(signal.shape, code_index, spike_filters, triplets, filters)
    return refine_spikes(_correlation(residual, filters), code_index, spike_filters, np.asarray(triplets, np.float32),
                         _gram(filters), peaks, prior, max_shift, filters_sharing_channels(filters))


def test_a_spike_coded_by_the_wrong_filter_takes_the_one_that_fits():
    filters = _filters()
    peaks = np.abs(filters).max(axis=1).argmax(axis=1)
    signal = np.zeros((4, 200), dtype=np.float32)
    signal[:, 80:100] += 12.0 * filters[1]  # a spike of filter 1 ...
    prior = AmplitudePrior(means=np.full(3, 12.0), variances=np.full(3, 4.0))
    # ... coded (wrongly) as filter 0 at the same place
    times, labels, amplitudes = _refined(signal, np.array([80]), np.array([0]), [[0.0, 9.0, 0.0]], filters, peaks,
                                         prior, max_shift=3)
    assert labels.tolist() == [1] and times.tolist() == [80 + peaks[1]]
    assert abs(float(amplitudes[0]) - 12.0) < 0.5


def test_the_fit_read_from_the_correlations_is_the_fit_of_each_spikes_window():
    # Overlapping spikes of every filter, coded a little off in time, size and label: each spike's best
    # (filter, shift) from the residual's correlations is the one its own window gives, fitted directly:
    # its signal less the other spikes, every candidate at every shift, the same prior.
    rng = np.random.default_rng(3)
    filters = _filters()
    n_taps = filters.shape[2]
    peaks = np.abs(filters).max(axis=1).argmax(axis=1)
    code_index = np.array([30, 38, 45, 90, 97, 150, 153])
    spike_filters = np.array([0, 1, 2, 1, 0, 2, 0])
    signal = 0.3 * rng.standard_normal((4, 220))
    for i, k in zip(code_index, [1, 1, 2, 0, 0, 2, 1]):  # the true labels differ from the coded ones here and there
        signal[:, i + 1 : i + 1 + n_taps] += rng.uniform(6, 14) * filters[k]
    triplets = rng.uniform(0, 3, (len(code_index), 3))
    triplets[:, 1] += 8.0
    prior = AmplitudePrior(means=np.array([10.0, 9.0, 11.0]), variances=np.array([4.0, 2.0, 6.0]))
    max_shift = 3
    times, labels, amplitudes = _refined(signal, code_index, spike_filters, triplets, filters, peaks, prior, max_shift)

    reconstruction = _reconstruction(signal.shape, code_index, spike_filters, triplets, filters)
    for s, (i, k) in enumerate(zip(code_index, spike_filters)):
        own = _reconstruction(signal.shape, [i], [k], [triplets[s]], filters)
        window = signal - reconstruction + own  # the spike's own contribution put back
        best = None
        for c in filters_sharing_channels(filters)[k]:
            for shift in range(-max_shift, max_shift + 1):
                start = i + peaks[k] + shift - peaks[c]
                projection = float(np.sum(window[:, start : start + n_taps] * filters[c]))
                a = (projection + prior.means[c] / prior.variances[c]) / (1 + 1 / prior.variances[c])
                cost = (np.sum(window**2) - 2 * a * projection + a**2 + (a - prior.means[c]) ** 2 / prior.variances[c]
                        + np.log(prior.variances[c]))
                if best is None or cost < best[0]:
                    best = (cost, i + peaks[k] + shift, c, a)
        assert (times[s], labels[s]) == (best[1], best[2])
        assert abs(amplitudes[s] - best[3]) < 1e-3 * abs(best[3])



def test_between_twin_filters_with_equal_means_the_narrower_prior_is_the_likelier():
    # Filters 0 and 1 have one shape on the same channels: the spike fits both alike, and its amplitude is
    # both means. What is left of the cost is log σ²: the filter whose amplitudes vary less explains it
    # better (a broad prior spreads its probability over amplitudes this spike does not have).
    filters = _filters()
    filters[1] = filters[0]
    peaks = np.abs(filters).max(axis=1).argmax(axis=1)
    signal = np.zeros((4, 200), dtype=np.float32)
    signal[:, 80:100] += 10.0 * filters[0]
    # Equal priors too: a tie, which goes to the first candidate.
    for variances, expected in (([4.0, 1.0, 4.0], 1), ([1.0, 4.0, 4.0], 0), ([4.0, 4.0, 4.0], 0)):
        prior = AmplitudePrior(means=np.full(3, 10.0), variances=np.array(variances))
        _, labels, amplitudes = _refined(signal, np.array([80]), np.array([0]), [[0.0, 10.0, 0.0]], filters, peaks,
                                         prior, max_shift=2)
        assert labels.tolist() == [expected] and abs(float(amplitudes[0]) - 10.0) < 1e-3


def test_a_filter_holding_two_sizes_has_the_prior_of_its_main_neuron():
    rng = np.random.default_rng(7)
    big = 108.0 * np.exp(0.05 * rng.standard_normal(600))  # its own neuron
    small = 35.0 * np.exp(0.05 * rng.standard_normal(300))  # a smaller neuron of the same shape
    one = 20.0 * np.exp(0.15 * rng.standard_normal(500))  # filter 1: one neuron, jitter only
    amplitudes = np.concatenate([big, small, one])
    filters = np.repeat([0, 0, 1], [600, 300, 500])
    prior = AmplitudePrior.from_events(amplitudes, filters, 2)
    # Filter 0's prior is its big neuron's, narrow: a spike of 35 costs far more there than a spike of 108.
    assert abs(prior.means[0] - 108.0) < 3.0
    assert np.sqrt(prior.variances[0]) < 10.0
    # One neuron keeps the prior of all its spikes.
    assert abs(prior.means[1] - np.median(one)) < 1e-6


def test_what_the_kept_spikes_explain_is_their_reconstructions_correlation():
    # explained_correlation sums HᵀHx from the Gram rows; written out, it is Hᵀ of the spikes' reconstruction.
    filters = _filters()
    n_taps = filters.shape[2]
    gram = _gram(filters)
    code_index = np.array([0, 25, 31, 60, 180])  # one at the chunk's start: no code at index − 1
    spike_filters = np.array([2, 0, 1, 2, 0])
    triplets = np.array([[0.0, 7.0, 2.0], [1.0, 9.0, 0.5], [0.0, 5.0, 0.0], [2.5, 6.0, 1.5], [0.3, 4.0, 0.0]])
    signal_shape = (4, 180 + n_taps)  # codes 0..180: one at the chunk's last index, no code at index + 1
    reconstruction = _reconstruction(signal_shape, code_index, spike_filters, triplets, filters)
    expected = _correlation(reconstruction, filters)
    explained = explained_correlation(GramRows(gram, interacting_partners(gram)), code_index, spike_filters,
                                      triplets.astype(np.float32), expected.shape)
    assert explained.shape == expected.shape
    np.testing.assert_allclose(explained, expected, atol=1e-4)
