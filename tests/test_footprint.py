"""A filter grows onto the channels beyond its neighbourhood where its neuron is still big, and no further."""

import numpy as np

from engine.pipeline.footprint import describe_footprints, widen_footprints

N_TAPS = 30
# Eight channels in a line, 25 µm apart; neighbourhoods of 30 µm hold a channel and its two neighbours.
POSITIONS = np.stack([np.zeros(8), 25.0 * np.arange(8)], axis=1)
RADIUS = 30.0


def _shape(peaks_per_channel: np.ndarray) -> np.ndarray:
    """(n_channels, n_taps) a negative spike scaled per channel, in σ units."""
    taps = np.arange(N_TAPS)
    bump = -np.exp(-0.5 * ((taps - 10) / 2.0) ** 2)
    return peaks_per_channel[:, None] * bump[None, :]


def _recording(spike_shape: np.ndarray, n_spikes: int = 150, seed: int = 0):
    """Noise (σ = 1) with `spike_shape` at regular starts; returns the signal and the starts."""
    rng = np.random.default_rng(seed)
    starts = 50 + 80 * np.arange(n_spikes)
    signal = rng.standard_normal((spike_shape.shape[0], starts[-1] + 100)).astype(np.float32)
    for start in starts:
        signal[:, start:start + N_TAPS] += spike_shape
    return signal, starts


def _local_filter(spike_shape: np.ndarray, channels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros(spike_shape.shape[0], dtype=bool)
    mask[channels] = True
    shape = spike_shape * mask[:, None]
    return (shape / np.linalg.norm(shape))[None].astype(np.float32), mask[None]


def test_a_big_neuron_gets_the_channels_where_it_still_peaks_above_the_bar():
    # Peaks of 60, 30, 4, 0.6, 1 and ~0 σ down the probe: the filter starts on channels 0-1.
    truth = _shape(np.array([60.0, 30.0, 4.0, 0.6, 1.0, 0.2, 0.0, 0.0]))
    signal, starts = _recording(truth)
    filters, mask = _local_filter(truth, np.array([0, 1]))
    amplitude = float(np.linalg.norm(truth * mask[0][:, None]))
    widened_filters, widened_mask, widened = widen_footprints(
        signal, filters, mask, starts, np.zeros(len(starts), np.int64), np.full(len(starts), amplitude),
        POSITIONS, RADIUS)
    assert widened == [0]
    # Channel 2 (4 σ) joins; channel 3 (0.6 σ, within reach) is under the bar; 4+ are too far anyway.
    assert widened_mask[0].tolist() == [True, True, True, False, False, False, False, False]
    assert np.all(widened_filters[0, ~widened_mask[0]] == 0)
    assert np.isclose(np.linalg.norm(widened_filters[0]), 1.0, atol=1e-5)
    # The grown filter is the neuron's shape on all its channels: closer to the truth than before.
    on_all = truth * widened_mask[0][:, None]
    before = float(np.sum(filters[0] * truth) / np.linalg.norm(truth))
    after = float(np.sum(widened_filters[0] * on_all) / np.linalg.norm(on_all))
    assert after > 0.99 and after > before
    assert describe_footprints(widened, mask, widened_mask) == "channels widened: filter 0 (2→3)"


def test_a_neuron_inside_its_neighbourhood_and_a_filter_with_too_few_spikes_stay_as_they_are():
    small = _shape(np.array([12.0, 6.0, 0.5, 0.3, 0.0, 0.0, 0.0, 0.0]))
    signal, starts = _recording(small)
    filters, mask = _local_filter(small, np.array([0, 1]))
    amplitudes = np.full(len(starts), float(np.linalg.norm(small)))
    same_filters, same_mask, widened = widen_footprints(
        signal, filters, mask, starts, np.zeros(len(starts), np.int64), amplitudes, POSITIONS, RADIUS)
    assert widened == [] and np.array_equal(same_mask, mask) and np.array_equal(same_filters, filters)
    assert describe_footprints(widened, mask, same_mask) == "no filter reaches beyond its neighbourhood"

    big = _shape(np.array([60.0, 30.0, 10.0, 4.0, 0.0, 0.0, 0.0, 0.0]))
    signal, starts = _recording(big, n_spikes=10)
    filters, mask = _local_filter(big, np.array([0, 1]))
    _, same_mask, widened = widen_footprints(
        signal, filters, mask, starts, np.zeros(len(starts), np.int64), np.full(len(starts), 60.0), POSITIONS, RADIUS)
    assert widened == [] and np.array_equal(same_mask, mask)


def test_no_channel_beyond_the_largest_reach_is_added():
    # A neuron still big far down the line (12 σ on channels 2-7): only channels within 2.5 radii
    # (75 µm) of channel 0 join.
    far_reaching = _shape(np.array([40.0, 40.0, 12.0, 12.0, 12.0, 12.0, 12.0, 12.0]))
    signal, starts = _recording(far_reaching)
    filters, mask = _local_filter(far_reaching, np.array([0, 1]))
    _, widened_mask, widened = widen_footprints(
        signal, filters, mask, starts, np.zeros(len(starts), np.int64),
        np.full(len(starts), 80.0), POSITIONS, RADIUS)
    assert widened == [0]
    assert widened_mask[0].tolist() == [True, True, True, True, False, False, False, False]
    assert "filter 0 (2→4)" in describe_footprints(widened, mask, widened_mask)


def test_a_filter_that_fires_beside_a_bigger_neuron_does_not_take_its_channels():
    # A filter of small spikes on channels 0-1 whose spikes come with a big neuron's on channels 2-3
    # (a filter coding what another neuron's filter leaves out): its median spike is mostly that
    # neuron, which is not this filter's to take. Widened, it became a copy of the big neuron.
    small = _shape(np.array([4.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    big_beside = _shape(np.array([0.0, 0.0, 30.0, 20.0, 0.0, 0.0, 0.0, 0.0]))
    signal, starts = _recording(small + big_beside)
    filters, mask = _local_filter(small, np.array([0, 1]))
    same_filters, same_mask, widened = widen_footprints(
        signal, filters, mask, starts, np.zeros(len(starts), np.int64),
        np.full(len(starts), float(np.linalg.norm(small))), POSITIONS, RADIUS)
    assert widened == [] and np.array_equal(same_mask, mask) and np.array_equal(same_filters, filters)
