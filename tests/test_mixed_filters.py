"""A filter whose spikes are two neurons is split in two; one neuron's few, noisy spikes are not.

split_mixed_filters halves each filter's spikes by k-means and splits it when the halves' shapes are
under the duplicate bar. k-means halves one neuron's spikes too, along its noise; with a few hundred
spikes the halves' means were 0.86-0.95 alike by their noise and what k-means selected, and the neuron
became two filters (on the simulator's 60-s probes, five units of one neuron)."""

import numpy as np

from engine.model.similarity import shift_invariant_similarity
from engine.pipeline.initialization import split_mixed_filters
from engine.pipeline.params import DUPLICATE_SIMILARITY, PEAK_FRACTION

N_CHANNELS, N_TAPS = 8, 60
PEAK = int(PEAK_FRACTION * N_TAPS)


def shape(gains) -> np.ndarray:
    taps = np.arange(N_TAPS)[None, :]
    wave = -np.exp(-0.5 * ((taps - PEAK) / 2.5) ** 2) + 0.3 * np.exp(-0.5 * ((taps - PEAK - 10) / 5.0) ** 2)
    return np.asarray(gains, dtype=np.float64)[:, None] * wave


ONE = shape([1.0, 0.8, 0.5, 0.3, 0.2, 0.1, 0.0, 0.0])
NEIGHBOUR = shape([0.3, 0.6, 1.0, 0.6, 0.3, 0.1, 0.0, 0.0])


def split_of(shapes, n_each: int, amplitude: float, seed: int) -> list[int]:
    """The filters split when unit-σ noise holds `n_each` spikes of each of `shapes` (peak `amplitude` σ),
    all coded by one filter (their mean shape)."""
    rng = np.random.default_rng(seed)
    n = len(shapes) * n_each
    starts = 100 + 300 * np.arange(n)
    signal = rng.standard_normal((N_CHANNELS, int(starts[-1]) + 400)).astype(np.float32)
    which = rng.permutation(np.repeat(np.arange(len(shapes)), n_each))
    for start, k in zip(starts, which):
        signal[:, start : start + N_TAPS] += amplitude * shapes[k]
    mean = np.mean([s / np.linalg.norm(s) for s in shapes], axis=0)
    filters = (mean / np.linalg.norm(mean)).astype(np.float32)[None]
    amplitudes = np.array([float((signal[:, s : s + N_TAPS] * filters[0]).sum()) for s in starts], np.float32)
    return split_mixed_filters(signal, filters, starts.astype(np.int64), np.zeros(n, np.int64), amplitudes,
                               DUPLICATE_SIMILARITY, min_spikes=20).split


def test_one_neurons_few_noisy_spikes_stay_one_filter():
    assert [split_of([ONE], 120, 5.0, seed) for seed in range(5)] == [[]] * 5
    assert [split_of([ONE], 60, 4.0, seed) for seed in range(5)] == [[]] * 5


def test_two_neurons_in_one_filter_are_split_with_as_few_spikes():
    alike = shift_invariant_similarity(np.stack([ONE, NEIGHBOUR]).transpose(0, 2, 1))[0, 1]
    assert 0.7 < alike < 0.85
    assert [split_of([ONE, NEIGHBOUR], 60, 5.0, seed) for seed in range(5)] == [[0]] * 5
    assert [split_of([ONE, NEIGHBOUR], 30, 4.0, seed) for seed in range(5)] == [[0]] * 5
