"""Refinement relabels a spike to the filter that explains it best, among the filters on its channels."""

import numpy as np

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


def test_a_spike_coded_by_the_wrong_filter_takes_the_one_that_fits():
    filters = _filters()
    peaks = np.abs(filters).max(axis=1).argmax(axis=1)
    signal = np.zeros((4, 200), dtype=np.float32)
    signal[:, 80:100] += 12.0 * filters[1]  # a spike of filter 1 ...
    prior = AmplitudePrior(means=np.full(3, 12.0), variances=np.full(3, 4.0))
    reconstruction = np.zeros_like(signal)
    reconstruction[:, 80:100] += 9.0 * filters[0]  # ... coded (wrongly) as filter 0 at the same place
    for candidates_of in (None, filters_sharing_channels(filters)):
        times, labels, amplitudes = refine_spikes(
            signal, reconstruction, np.array([80]), np.array([0]), np.array([[0.0, 9.0, 0.0]], np.float32),
            filters, peaks, prior, max_shift=3, candidates_of=candidates_of)
        assert labels.tolist() == [1] and times.tolist() == [80 + peaks[1]]
        assert abs(float(amplitudes[0]) - 12.0) < 0.5


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
