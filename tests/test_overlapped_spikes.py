"""A small neuron's spikes dropped as a bigger spike's residue are given back where the recording holds them."""

import numpy as np

from engine.pipeline.inference import SpikeEvents
from engine.pipeline.overlapped_spikes import restore_overlapped_spikes
from tests.test_hollow_events import N_CHANNELS, N_TAPS, SECONDS, recording_of, shape, sorting_of
from tests.test_unit_merge import DEAD, RATE, spike_train

# A big neuron on channels 0-4 and a small one on 2-6: they share channels, so the lasso reads the small
# one's spikes short where the two overlap.
BIG = shape({0: 30.0, 1: 24.0, 2: 16.0, 3: 9.0, 4: 4.0})
SMALL = shape({2: 5.0, 3: 8.0, 4: 7.0, 5: 5.0, 6: 3.0}, width=2.0, late=0.6)
MASKS = np.zeros((3, N_CHANNELS), dtype=bool)
MASKS[0, 0:5] = True
MASKS[1, 2:7] = True
MASKS[2, 2:7] = True


def dropped_events(times: np.ndarray, filter_index: int = 1) -> SpikeEvents:
    times = np.sort(np.asarray(times, dtype=np.int64))
    return SpikeEvents(times, np.full(len(times), filter_index, np.int32), np.full(len(times), 3.0, np.float32))


def restored(sorting, recording, dropped: SpikeEvents):
    return restore_overlapped_spikes(sorting, recording, np.ones(N_CHANNELS), MASKS[:sorting.filter_index.max() + 1],
                                     dropped, DEAD)


def given_back(after, unit: int, times: np.ndarray) -> float:
    return float(np.isin(times, after.spike_times[after.spike_units == unit]).mean())


def scene(seed: int):
    """Two neurons; the small one's spikes within 10 samples of a big one's taken out of its unit, as the
    coincidence rule drops them, and events of its filter at other big spikes, as the lasso codes residue."""
    rng = np.random.default_rng(seed)
    n_samples = int(SECONDS * RATE)
    big, small = spike_train(rng, n_samples, 15.0), spike_train(rng, n_samples, 12.0)
    overlapped = big[::6][:150] + rng.integers(-10, 11, len(big[::6][:150]))
    small = np.sort(np.concatenate([small[np.min(np.abs(small[:, None] - big[None, :]), axis=1) > 80], overlapped]))
    recording = recording_of(rng, [(big, BIG), (small, SMALL)])
    lone_small = small[~np.isin(small, overlapped)]
    near_small = np.min(np.abs(big[:, None] - small[None, :]), axis=1) < 100
    residue = big[~near_small][1::3] + rng.integers(0, 4, len(big[~near_small][1::3]))
    return recording, big, lone_small, overlapped, residue


def test_a_small_neurons_spikes_dropped_beside_a_big_ones_come_back_and_the_residue_stays_out():
    recording, big, lone_small, overlapped, residue = scene(0)
    sorting = sorting_of([big, lone_small], [0, 1], [BIG, SMALL])
    after = restored(sorting, recording, dropped_events(np.concatenate([overlapped, residue])))
    assert given_back(after, 1, overlapped) >= 0.95
    assert given_back(after, 1, residue) <= 0.02
    # Nothing else moved: the big unit as it was, the small one its spikes and the given-back ones.
    assert np.array_equal(after.spike_times[after.spike_units == 0], big)
    small_after = after.spike_times[after.spike_units == 1]
    assert np.isin(lone_small, small_after).all()
    assert len(small_after) == len(lone_small) + np.isin(small_after, np.concatenate([overlapped, residue])).sum()
    assert np.all(np.diff(after.spike_times) >= 0)  # back in time order, amplitudes and codes with them
    back = np.isin(after.spike_times, overlapped) & (after.spike_units == 1)  # amplitudes: fitted size × usual
    usual = np.median(sorting.amplitudes[sorting.spike_units == 1])
    assert np.all((after.amplitudes[back] >= 0.6 * usual) & (after.amplitudes[back] <= usual / 0.6))
    assert "overlapped spikes restored" in after.provenance.overlapped_spikes


def test_nothing_is_given_to_a_unit_labelled_noise_nor_within_its_dead_time_of_its_own_spikes():
    recording, big, lone_small, overlapped, residue = scene(1)
    noise = restored(sorting_of([big, lone_small], [0, 1], [BIG, SMALL], labels={1: "noise"}), recording,
                     dropped_events(overlapped))
    assert given_back(noise, 1, overlapped) == 0.0
    assert noise.provenance.overlapped_spikes == "no spikes restored"
    # The same spike coded again a few samples off is a copy, not a second spike: one stays.
    kept = np.concatenate([lone_small, overlapped[::2]])
    after = restored(sorting_of([big, np.sort(kept)], [0, 1], [BIG, SMALL]), recording,
                     dropped_events(np.concatenate([overlapped[::2] + 3, overlapped[1::2], overlapped[1::2] + 2])))
    unit_times = after.spike_times[after.spike_units == 1]
    assert np.min(np.diff(unit_times)) > DEAD
    assert given_back(after, 1, overlapped[1::2]) + given_back(after, 1, overlapped[1::2] + 2) >= 0.95


def test_a_filter_split_into_two_units_by_size_gives_each_dropped_spike_to_the_unit_of_its_size():
    # One filter codes the small neuron and a second one of its shape at twice its size (an amplitude split's
    # two units): a dropped spike goes to the unit whose typical size it has.
    rng = np.random.default_rng(2)
    n_samples = int(SECONDS * RATE)
    big, small, double = (spike_train(rng, n_samples, rate) for rate in (15.0, 10.0, 10.0))
    small = small[np.min(np.abs(small[:, None] - double[None, :]), axis=1) > 80]
    dropped_small, dropped_double = small[::5], double[::5]
    recording = recording_of(rng, [(big, BIG), (small, SMALL), (double, 2.0 * SMALL)])
    sorting = sorting_of([big, small[~np.isin(small, dropped_small)], double[~np.isin(double, dropped_double)]],
                         [0, 1, 2], [BIG, SMALL, 2.0 * SMALL])
    sorting.filter_index = np.array([0, 1, 1])
    after = restored(sorting, recording, dropped_events(np.concatenate([dropped_small, dropped_double])))
    assert given_back(after, 1, dropped_small) >= 0.95 and given_back(after, 2, dropped_small) == 0.0
    assert given_back(after, 2, dropped_double) >= 0.95 and given_back(after, 1, dropped_double) == 0.0


def test_a_size_that_does_not_stand_out_from_what_the_fit_leaves_is_not_given_back(monkeypatch):
    # Beside a spike far bigger than the unit, what the bigger one's median does not model fits the small
    # unit at any size (SpikeInterface's 32-channel probe, seed 5). Here loud bursts no unit models stand in
    # for it: a fair share fit at the unit's own size, none stands 5 standard errors from 0.
    rng = np.random.default_rng(4)
    n_samples = int(SECONDS * RATE)
    big, small = spike_train(rng, n_samples, 15.0), spike_train(rng, n_samples, 12.0)
    bursts = np.sort(rng.choice(np.arange(2_000, n_samples - 2_000, 300), 300, replace=False))
    bursts = bursts[np.min(np.abs(bursts[:, None] - np.concatenate([big, small])[None, :]), axis=1) > 150]
    loud = [(np.array([time]), 15.0 * rng.standard_normal((N_TAPS, N_CHANNELS)) * (np.arange(N_CHANNELS) >= 2))
            for time in bursts]
    recording = recording_of(rng, [(big, BIG), (small, SMALL), *loud])
    sorting = sorting_of([big, small], [0, 1], [BIG, SMALL])
    assert given_back(restored(sorting, recording, dropped_events(bursts)), 1, bursts) == 0.0
    monkeypatch.setattr("engine.pipeline.overlapped_spikes.RESTORED_T", 0.0)  # the size bar alone takes some
    assert given_back(restored(sorting, recording, dropped_events(bursts)), 1, bursts) >= 0.05
