"""Two filters that code one neuron together become one; neighbours and a two-size filter stay apart."""

import numpy as np

from engine.pipeline.co_firing import combine_co_firing, describe_co_firing, find_co_firing
from engine.pipeline.inference import SpikeEvents

RNG = np.random.default_rng(0)
SHARING = np.ones((3, 3), dtype=bool)


def _events(trains: dict[int, tuple[np.ndarray, np.ndarray]]) -> SpikeEvents:
    times = np.concatenate([t for t, _ in trains.values()])
    filters = np.concatenate([np.full(len(t), k) for k, (t, _) in trains.items()])
    sizes = np.concatenate([a for _, a in trains.values()])
    order = np.argsort(times, kind="stable")
    return SpikeEvents(times[order].astype(np.int64), filters[order].astype(np.int32), sizes[order].astype(np.float32))


def _sizes(n: int, size: float) -> np.ndarray:
    return size * np.exp(0.1 * RNG.standard_normal(n))


def test_two_filters_firing_at_the_same_samples_are_one_neuron_and_an_independent_neighbour_is_not():
    neuron = np.sort(RNG.choice(np.arange(100, 3_000_000, 200), 2000, replace=False))
    # Filter 1 fires with 70 % of filter 0's spikes, a sample later, and a few times alone.
    together = neuron[RNG.random(neuron.size) < 0.7] + 1
    alone = np.sort(RNG.choice(np.arange(150, 3_000_000, 200), 300, replace=False))
    second = np.sort(np.concatenate([together, alone]))
    other = np.sort(RNG.choice(np.arange(170, 3_000_000, 200), 2000, replace=False))  # its own neuron
    events = _events({0: (neuron, _sizes(neuron.size, 16.0)), 1: (second, _sizes(second.size, 14.0)),
                      2: (other, _sizes(other.size, 15.0))})
    absorbed = find_co_firing(events, [0, 1, 2], window=3, sharing=SHARING)
    assert absorbed == {1: 0}
    assert describe_co_firing(absorbed) == "joined co-firing 1+0"
    # Far apart on the probe, the same pair is left alone.
    apart = SHARING.copy()
    apart[0, 1] = apart[1, 0] = False
    assert find_co_firing(events, [0, 1, 2], window=3, sharing=apart) == {}


def test_the_joined_shape_is_both_filters_at_their_sizes_and_offset():
    n_taps = 20
    first = np.zeros((n_taps, 1), np.float32)
    first[5, 0] = 1.0
    second = np.zeros((n_taps, 1), np.float32)
    second[8, 0] = 1.0
    filters = np.stack([first, second, first])  # (3, n_taps, 1)
    neuron = np.arange(1000, 200_000, 300)
    # Extremum times: filter 0 peaks at tap 5, filter 1 at tap 8; both codes start at the same sample.
    events = _events({0: (neuron, np.full(neuron.size, 3.0)), 1: (neuron + 3, np.full(neuron.size, 4.0))})
    joined = combine_co_firing(filters, events, {1: 0}, window=3, peaks=np.array([5, 8, 5]))
    expected = np.zeros(n_taps)
    expected[5], expected[8] = 3.0, 4.0
    np.testing.assert_allclose(joined[0, :, 0], expected / 5.0, atol=1e-6)
    np.testing.assert_array_equal(joined[1], filters[1])  # the absorbed filter is dropped by the caller


def test_a_filter_with_two_sizes_that_co_fires_for_its_smaller_one_only_is_left_alone():
    small_neuron = np.sort(RNG.choice(np.arange(100, 3_000_000, 200), 1700, replace=False))
    big_neuron = np.sort(RNG.choice(np.arange(130, 3_000_000, 200), 1600, replace=False))
    # Filter 0 holds a big neuron (400) and a small one (90); filter 1 fires with the small one's spikes,
    # which are 52 % of filter 0's: enough co-firing, but filter 0 is two neurons.
    events = _events({0: (np.concatenate([big_neuron, small_neuron]),
                          np.concatenate([_sizes(big_neuron.size, 400.0), _sizes(small_neuron.size, 90.0)])),
                      1: (small_neuron + 1, _sizes(small_neuron.size, 60.0))})
    assert find_co_firing(events, [0, 1], window=3, sharing=SHARING[:2, :2]) == {}
