"""Counting each spike once and each neuron once: backward elimination of split events, splitting mixed filters."""

import numpy as np
import pytest

from engine.pipeline.explain_away import (_overlapping_groups, eliminate_redundant_codes, eliminate_redundant_events,
                                         event_atoms, subtract_filters)


def shapes(n_taps=30):
    taps = np.arange(n_taps)
    first = -np.exp(-0.5 * ((taps - 10) / 2.0) ** 2) + 0.4 * np.exp(-0.5 * ((taps - 16) / 4.0) ** 2)
    lookalike = np.roll(first, 1) * 0.9 + 0.1 * np.exp(-0.5 * ((taps - 20) / 3.0) ** 2)  # ~0.9 similar
    distinct = np.sin(taps / 3.0) * np.exp(-0.5 * ((taps - 15) / 5.0) ** 2)
    filters = np.stack([first, lookalike, distinct])[:, None, :]
    return (filters / np.linalg.norm(filters, axis=(1, 2), keepdims=True)).astype(np.float32)


def place(filters, n, events):
    signal = np.zeros((1, n))
    for filter_index, index, amplitude in events:
        signal[:, index : index + filters.shape[2]] += amplitude * filters[filter_index]
    return signal


def test_a_spike_split_between_two_lookalike_filters_keeps_only_the_right_one():
    filters = shapes()
    signal = place(filters, 200, [(0, 50, 20.0)])
    # What an unconverged lasso returns: most of the spike on filter 0, a part on its look-alike.
    index = np.array([50, 50])
    which = np.array([0, 1])
    triplets = np.array([[0.0, 13.0, 0.0], [0.0, 7.5, 0.0]])
    starts, atoms, channels = event_atoms(index, which, triplets, filters)
    keep, scales = eliminate_redundant_events(signal, starts, atoms, min_energy=5.0**2, channels=channels)
    assert keep.tolist() == [True, False]
    assert abs(13.0 * scales[0] - 20.0) < 0.5  # refitted to the whole spike


def test_two_neurons_overlapping_are_both_kept():
    filters = shapes()
    signal = place(filters, 200, [(0, 50, 12.0), (2, 58, 10.0)])
    starts, atoms, channels = event_atoms(np.array([50, 58]), np.array([0, 2]), np.array([[0, 11.0, 0], [0, 9.0, 0]]), filters)
    keep, scales = eliminate_redundant_events(signal, starts, atoms, min_energy=5.0**2, channels=channels)
    assert keep.all()
    np.testing.assert_allclose([11.0 * scales[0], 9.0 * scales[1]], [12.0, 10.0], rtol=0.02)


def test_a_lone_event_below_the_bar_is_dropped_and_one_above_is_kept():
    filters = shapes()
    rng = np.random.default_rng(0)
    signal = place(filters, 400, [(2, 40, 3.0), (2, 200, 9.0)]) + 0.01 * rng.standard_normal((1, 400))
    starts, atoms, channels = event_atoms(np.array([40, 200]), np.array([2, 2]), np.array([[0, 3.0, 0], [0, 9.0, 0]]), filters)
    keep, _ = eliminate_redundant_events(signal, starts, atoms, min_energy=5.0**2, channels=channels)
    assert keep.tolist() == [False, True]


def test_no_events_is_not_an_error():
    keep, scales = eliminate_redundant_events(np.zeros((2, 50)), np.zeros(0, np.int64), np.zeros((0, 2, 12)), 1.0)
    assert keep.size == 0 and scales.size == 0


def interleaved_trains(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two spike trains 400 samples apart each, the second halfway between the first's spikes."""
    first = np.arange(100, n - 100, 400)
    return first, first[:-1] + 200


def test_a_filter_holding_two_neurons_is_split_and_one_neuron_is_not():
    from engine.pipeline.initialization import split_mixed_filters

    filters = shapes()
    rng = np.random.default_rng(1)
    n = 40_000
    first_times, second_times = interleaved_trains(n)
    signal = place(filters, n, [(0, t, 12.0 * (1 + 0.1 * rng.standard_normal())) for t in first_times])
    signal += place(filters, n, [(2, t, 12.0) for t in second_times])
    signal += 0.5 * rng.standard_normal(signal.shape)
    # Every spike put on filter 0, as k-means does when it folds a neuron into another.
    starts = np.concatenate([first_times, second_times])
    labels = np.zeros(starts.size, dtype=np.int64)
    amplitudes = np.full(starts.size, 12.0)
    start_filters = filters[:1].copy()
    result = split_mixed_filters(signal, start_filters, starts, labels, amplitudes, 0.97, 20)
    new, split = result.filters, result.split
    assert split == [0] and len(new) == 2
    best = [max(abs(float(np.sum(f * g))) for f in new) for g in (filters[0], filters[2])]
    assert min(best) > 0.95  # each neuron has its own filter back
    # Each spike goes with its neuron's half: pruning after the split counts them without coding again.
    first_half = int(np.argmax([abs(float(np.sum(f * filters[0]))) for f in new]))
    is_first = np.arange(starts.size) < first_times.size
    assert np.mean(result.spike_filters[is_first] == first_half) > 0.98
    assert np.mean(result.spike_filters[~is_first] == 1 - first_half) > 0.98

    only_first = labels[: first_times.size]
    result = split_mixed_filters(signal, start_filters, first_times, only_first, amplitudes[: first_times.size],
                                 0.97, 20)
    assert result.split == [] and len(result.filters) == 1  # amplitude jitter alone is not two neurons
    assert np.array_equal(result.spike_filters, only_first)


def test_a_filter_that_follows_a_bigger_units_spikes_is_a_shadow_and_a_neighbour_is_not():
    from engine.pipeline.pruning import find_shadows, prune
    from engine.pipeline.inference import SpikeEvents

    rng = np.random.default_rng(4)
    big = np.sort(rng.choice(np.arange(100, 200_000, 50), 400, replace=False))
    shadow = big[:360] + rng.integers(-3, 4, 360)  # 90 % of its spikes within 3 samples of a big one
    neighbour = np.sort(rng.choice(np.arange(120, 200_000, 37), 400, replace=False))  # its own neuron
    times = np.concatenate([big, shadow, neighbour])
    filters = np.repeat([0, 1, 2], [400, 360, 400]).astype(np.int32)
    amplitudes = np.concatenate([np.full(400, 60.0), np.full(360, 8.0), np.full(400, 9.0)]).astype(np.float32)
    order = np.argsort(times, kind="stable")
    events = SpikeEvents(times[order], filters[order], amplitudes[order])
    assert find_shadows(events, 3, window=30) == {1: 0}
    shapes = np.random.default_rng(5).standard_normal((3, 20, 1)).astype(np.float32)
    decision = prune(shapes, events, shadow_window=30)
    assert decision.keep.tolist() == [0, 2]
    assert "dropped shadows 1 (of 0)" in decision.describe()
    assert prune(shapes, events).keep.tolist() == [0, 1, 2]  # no window, no shadow rule


def test_atoms_live_on_their_filters_channels_and_far_apart_spikes_are_not_grouped():
    """On a probe an atom holds only its filter's channels; spikes overlapping in time on other
    channels are decided apart, with the same result as full-width atoms."""
    one = shapes()[:, 0, :]  # (3, n_taps)
    filters = np.zeros((3, 4, one.shape[1]), dtype=np.float32)
    filters[0, :2] = one[0] / np.sqrt(2)  # channels 0-1
    filters[1, :2] = one[1] / np.sqrt(2)  # its look-alike, same channels
    filters[2, 2:] = one[0] / np.sqrt(2)  # channels 2-3, the same shape far away
    signal = np.zeros((4, 200))
    signal[:, 50:80] += 20.0 * filters[0]
    signal[:, 52:82] += 15.0 * filters[2]
    index, which = np.array([50, 50, 52]), np.array([0, 1, 2])
    triplets = np.array([[0, 13.0, 0], [0, 7.5, 0], [0, 15.0, 0]])
    starts, atoms, channels = event_atoms(index, which, triplets, filters)
    assert atoms.shape[1] == 2 and channels.tolist() == [[0, 1], [0, 1], [2, 3]]
    keep, scales = eliminate_redundant_events(signal, starts, atoms, min_energy=5.0**2, channels=channels)
    assert keep.tolist() == [True, False, True]
    # The same decision with every atom spread over all four channels.
    full = np.zeros((3, 4, atoms.shape[2]))
    for event in range(3):
        full[event, channels[event]] = atoms[event]
    keep_full, scales_full = eliminate_redundant_events(signal, starts, full, min_energy=5.0**2)
    assert keep_full.tolist() == keep.tolist()
    np.testing.assert_allclose(scales, scales_full, rtol=1e-4)  # the ridge scales with the group it is in


def _one_by_one(signal, starts, atoms, channels, min_energy, ridge=1e-6):
    """The elimination written plainly, as the oracle: each group's atoms placed on the probe, refitted,
    the cheapest dropped while under the bar, one group and one event at a time."""
    n_events, width = len(starts), atoms.shape[2]
    dense = np.zeros((n_events, signal.shape[0], signal.shape[1] + 2 * width))
    for event in range(n_events):
        for row, channel in enumerate(channels[event]):
            if channel >= 0:
                dense[event, channel, starts[event] + width : starts[event] + 2 * width] = atoms[event, row]
    dense = dense.reshape(n_events, -1)
    padded = np.pad(signal, ((0, 0), (width, width))).ravel()
    order = np.argsort(starts, kind="stable")  # the module's own grouping: what is under test is the elimination
    group = np.empty(n_events, dtype=np.int64)
    group[order] = _overlapping_groups(starts[order], width, channels[order], signal.shape[0])
    keep, scales = np.zeros(n_events, bool), np.zeros(n_events)
    for label in np.unique(group):
        active = np.flatnonzero(group == label)
        alone = active.size == 1  # a lone event's scale in closed form, without the ridge
        while active.size:
            gram = dense[active] @ dense[active].T
            gram += (0.0 if alone else ridge) * np.trace(gram) / active.size * np.eye(active.size)
            inverse = np.linalg.inv(gram)
            fitted = inverse @ (dense[active] @ padded)
            cost = fitted**2 / np.maximum(np.diag(inverse), 1e-12)
            cost[fitted <= 0] = -np.inf
            weakest = int(np.argmin(cost))
            if cost[weakest] >= min_energy:
                keep[active], scales[active] = True, fitted
                break
            active = np.delete(active, weakest)
    return keep, scales


def test_compiled_group_elimination_decides_as_the_plain_elimination():
    """Groups are eliminated in one compiled loop (explain_away._eliminate_groups); the decisions and
    scales must be those of the plain elimination, on a many-channel signal with groups of every size."""
    rng = np.random.default_rng(3)
    n_channels, n_taps, n = 6, 30, 20_000
    filters = np.zeros((8, n_channels, n_taps), dtype=np.float32)
    for k in range(8):  # each filter on 3 neighbouring channels, some of them look-alikes
        channels = (np.arange(3) + k // 2) % n_channels
        filters[k, channels] = shapes(n_taps)[k % 3, 0] * rng.uniform(0.5, 1.0, (3, 1))
    filters /= np.linalg.norm(filters, axis=(1, 2), keepdims=True)
    n_events = 600
    index = np.sort(rng.integers(1, n - n_taps - 2, n_events))
    which = rng.integers(0, 8, n_events)
    triplets = rng.uniform(0, 12, (n_events, 3)) * np.array([0.2, 1.0, 0.2])
    signal = rng.standard_normal((n_channels, n))
    for filter_index, start, amplitude in zip(which, index, rng.uniform(2, 20, n_events)):
        signal[:, start : start + n_taps] += amplitude * filters[filter_index]
    starts, atoms, channels = event_atoms(index, which, triplets, filters)
    expected_keep, expected_scales = _one_by_one(signal, starts, atoms, channels, 5.0**2)
    assert 0 < expected_keep.sum() < n_events  # some dropped, some kept: the test decides something
    keep, scales = eliminate_redundant_events(signal, starts, atoms, min_energy=5.0**2, channels=channels)
    assert keep.tolist() == expected_keep.tolist()
    np.testing.assert_allclose(np.where(keep, scales, 0.0), expected_scales, rtol=1e-6, atol=1e-9)


def test_two_neurons_of_one_shape_and_different_sizes_get_a_filter_each_and_stay_apart():
    from engine.pipeline.initialization import split_mixed_filters
    from engine.pipeline.inference import SpikeEvents
    from engine.pipeline.pruning import prune

    filters = shapes()
    rng = np.random.default_rng(5)
    n = 40_000
    small_times, large_times = interleaved_trains(n)
    small_sizes = 12.0 * np.exp(0.05 * rng.standard_normal(small_times.size))
    large_sizes = 36.0 * np.exp(0.05 * rng.standard_normal(large_times.size))
    signal = place(filters, n, [(0, t, a) for t, a in zip(small_times, small_sizes)])
    signal += place(filters, n, [(0, t, a) for t, a in zip(large_times, large_sizes)])
    signal += 0.5 * rng.standard_normal(signal.shape)
    starts = np.concatenate([small_times, large_times])
    amplitudes = np.concatenate([small_sizes, large_sizes])
    labels = np.zeros(starts.size, dtype=np.int64)
    result = split_mixed_filters(signal, filters[:1].copy(), starts, labels, amplitudes, 0.97, 20)
    assert result.split == [0] and len(result.filters) == 2
    # One shape, so both filters are the shape; each size group went with one of them.
    assert all(abs(float(np.sum(f * filters[0]))) > 0.99 for f in result.filters)
    is_small = np.arange(starts.size) < small_times.size
    assert len(set(result.spike_filters[is_small])) == 1 and len(set(result.spike_filters[~is_small])) == 1
    assert result.spike_filters[0] != result.spike_filters[-1]
    # The pruning after the split does not merge them back as duplicates: they differ 3× in size ...
    events = SpikeEvents(starts, result.spike_filters.astype(np.int32), amplitudes.astype(np.float32))
    decision = prune(result.filters.transpose(0, 2, 1), events)
    assert decision.merged_into == {} and len(decision.keep) == 2
    # ... while two filters of one shape and one size are.
    events = SpikeEvents(starts, result.spike_filters.astype(np.int32), np.full(starts.size, 12.0, np.float32))
    assert len(prune(result.filters.transpose(0, 2, 1), events).merged_into) == 1


def test_atom_products_from_the_gram_tensor_match_the_atoms_samples():
    """Explaining away during sorting takes the atoms' products from the filters' Gram tensor
    (nine entries a pair); they must be the products of the atoms' samples, over the channels two
    filters share, at every lag the atoms overlap, and the decisions the same."""
    import torch

    from engine.model.crsae import CRsAE
    from engine.model.working_set import gram_tensor
    from engine.pipeline.explain_away import AtomProducts, _pair_products

    rng = np.random.default_rng(5)
    n_taps = 20
    filters = np.zeros((4, 5, n_taps), dtype=np.float32)
    for k, first_channel in enumerate((0, 1, 2, 3)):  # overlapping channel sets, one filter on two channels
        filters[k, first_channel : first_channel + (2 if k == 3 else 3)] = rng.standard_normal((2 if k == 3 else 3, n_taps))
    filters /= np.linalg.norm(filters, axis=(1, 2), keepdims=True)
    gram = gram_tensor(CRsAE(torch.from_numpy(filters), 1.0))
    n = 60
    which = rng.integers(0, 4, n)
    triplets = rng.uniform(0.0, 10.0, (n, 3))
    starts, atoms, channels = event_atoms(np.sort(rng.integers(0, 300, n)), which, triplets, filters)
    first, second = np.triu_indices(n, k=1)
    lags = starts[second] - starts[first]
    overlapping = lags < atoms.shape[2]
    first, second, lags = first[overlapping], second[overlapping], lags[overlapping]
    assert len(first) > 20 and (lags > n_taps - 2).any()  # some pairs overlap only at the atoms' ends
    products = AtomProducts(gram, which, triplets)
    np.testing.assert_allclose(products.pairs(first, second, lags),
                               _pair_products(first, second, lags, atoms, channels), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(products.norms(), np.einsum("ecw,ecw->e", atoms, atoms), rtol=1e-4)
    signal = rng.standard_normal((5, 340))
    for event in range(n):
        signal[channels[event][channels[event] >= 0], starts[event] : starts[event] + atoms.shape[2]] += \
            atoms[event][channels[event] >= 0] * rng.uniform(0.5, 1.5)
    keep, scales = eliminate_redundant_events(signal, starts, atoms, 5.0**2, channels=channels)
    keep_gram, scales_gram = eliminate_redundant_events(signal, starts, atoms, 5.0**2, channels=channels,
                                                        products=products)
    assert keep.tolist() == keep_gram.tolist() and 0 < keep.sum() < n
    np.testing.assert_allclose(scales, scales_gram, rtol=1e-4, atol=1e-6)
    # Given by their codes, the atoms never built (and the events in no particular order): the same decisions.
    shuffle = rng.permutation(n)
    keep_codes, scales_codes = eliminate_redundant_codes(signal, (starts + 1)[shuffle], which[shuffle],
                                                         triplets[shuffle], filters, gram, 5.0**2)
    assert keep_codes.tolist() == keep[shuffle].tolist()
    np.testing.assert_allclose(scales_codes, scales[shuffle], rtol=1e-4, atol=1e-6)


def test_a_splits_clustering_sees_the_channels_that_hold_spikes_and_not_pure_noise():
    """A filter on channels 0-1 whose spikes also carry a second neuron on channel 5: channels 0, 1 and 5
    are clustered, the noise-only channels are not."""
    from engine.pipeline.initialization import channels_with_spikes

    rng = np.random.default_rng(0)
    n_spikes, n_channels, n_taps = 300, 8, 30
    snippets = rng.standard_normal((n_spikes, n_channels, n_taps)).astype(np.float32)
    shape = np.exp(-0.5 * ((np.arange(n_taps) - 10) / 2.0) ** 2)
    snippets[:, 0] += 8 * shape
    snippets[::3, 5] += 5 * shape  # a third of the spikes are another neuron's, seen further along the probe
    own_filter = np.zeros((n_channels, n_taps), np.float32)
    own_filter[:2] = shape
    chosen = channels_with_spikes(snippets.reshape(n_spikes, -1), own_filter)
    assert chosen.tolist() == [True, True, False, False, False, True, False, False]


def test_atom_correlations_are_the_atoms_products_with_the_signal_at_edges_and_padding():
    from engine.pipeline.explain_away import _atom_correlations

    rng = np.random.default_rng(1)
    signal = rng.standard_normal((6, 200)).astype(np.float32)
    starts = np.array([-10, 0, 50, 190, 199])
    channels = np.array([[0, 1], [2, -1], [5, 3], [4, -1], [1, 0]])
    atoms = rng.standard_normal((5, 2, 20))
    expected = np.zeros(5)
    for event, start in enumerate(starts):
        for row, channel in enumerate(channels[event]):
            for tap in range(20):
                if channel >= 0 and 0 <= start + tap < 200:
                    expected[event] += atoms[event, row, tap] * signal[channel, start + tap]
    np.testing.assert_allclose(_atom_correlations(signal, starts, atoms, channels), expected, rtol=1e-10)


def test_scaled_filters_are_subtracted_on_their_own_channels_and_cropped_to_the_signal():
    """subtract_filters' compiled loop must take away what a plain loop over events places (filters on some
    channels only, atoms overlapping one another and both ends of the signal), leave the signal it was given
    as it was, and refuse atoms beyond its ends or filters of another width of probe rather than read or
    write outside them."""
    rng = np.random.default_rng(5)
    n_channels, n, width = 5, 60, 7
    filters = rng.standard_normal((3, n_channels, width)).astype(np.float32)
    filters[0, 2:] = 0.0  # filter 0 on channels 0-1, filter 2 on 3-4
    filters[2, :3] = 0.0
    starts = np.array([-width, -3, 0, 10, 12, 52, n])
    spike_filters = np.array([0, 1, 2, 0, 2, 1, 0])
    scales = rng.uniform(0.5, 4.0, len(starts)).astype(np.float32)
    signal = rng.standard_normal((n_channels, n))  # float64: the copy is float32 whatever it is given
    placed = np.zeros((n_channels, n + 2 * width))
    for start, k, scale in zip(starts, spike_filters, scales):
        placed[:, start + width : start + 2 * width] += (scale * filters[k]).astype(np.float64)
    before = signal.copy()
    residual = subtract_filters(signal, starts, scales, filters, spike_filters)
    assert residual.dtype == np.float32
    np.testing.assert_allclose(residual, signal - placed[:, width : width + n], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(signal, before)
    # An atom alone on its samples: exactly the float32 signal less the float32 product.
    lone = subtract_filters(signal[:, 20:40], np.array([5]), scales[:1], filters, np.array([1]))
    expected = signal[:, 20:40].astype(np.float32)
    expected[:, 5 : 5 + width] -= scales[0] * filters[1]
    np.testing.assert_array_equal(lone, expected)
    with pytest.raises(ValueError, match="outside"):
        subtract_filters(signal, np.array([n + 1]), scales[:1], filters, spike_filters[:1])
    with pytest.raises(ValueError, match="5-channel filters for a 4-channel signal"):
        subtract_filters(signal[:4], starts, scales, filters, spike_filters)
    with pytest.raises(ValueError, match=r"filters 3\.\.3 of a 3-filter"):
        subtract_filters(signal, starts[:1], scales[:1], filters, np.array([3]))


def test_events_naming_a_filter_outside_the_dictionary_are_refused_before_the_compiled_loops():
    filters = shapes()
    with pytest.raises(ValueError, match="filters 0..3 of a 3-filter"):
        event_atoms(np.array([5, 40]), np.array([0, 3]), np.ones((2, 3)), filters)
    with pytest.raises(ValueError, match=r"\(2, 3\) codes"):
        eliminate_redundant_codes(np.zeros((1, 100)), np.array([5, 40]), np.array([0, 1]), np.ones((2, 2)),
                                  filters, np.zeros((3, 3, 59)), 1.0)
    with pytest.raises(ValueError, match="2-channel signal for 1-channel filters"):
        eliminate_redundant_codes(np.zeros((2, 100)), np.array([5]), np.array([0]), np.ones((1, 3)),
                                  filters, np.zeros((3, 3, 59)), 1.0)
