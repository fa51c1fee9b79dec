"""Events whose recorded window holds none of their unit's waveform are dropped; a unit's own spikes stay."""

import numpy as np

from engine.io.recording import NumpyRecording
from engine.pipeline.hollow_events import drop_hollow_events
from engine.pipeline.sorting import Sorting, SortProvenance
from tests.test_unit_merge import RATE, spike_train

SECONDS, N_CHANNELS, N_TAPS, PEAK = 60.0, 8, 60, 20


def shape(channels: dict[int, float], width: float = 3.0, late: float = 0.35) -> np.ndarray:
    taps = np.arange(N_TAPS)[:, None]
    wave = -np.exp(-0.5 * ((taps - PEAK) / width) ** 2) + late * np.exp(-0.5 * ((taps - PEAK - 10) / 6.0) ** 2)
    gains = np.zeros(N_CHANNELS)
    for channel, gain in channels.items():
        gains[channel] = gain
    return wave * gains[None, :]


# A big neuron on channels 0-3 whose spikes leave a late tail on channels 4-5; a small one on 4-6.
BIG = shape({0: 30.0, 1: 22.0, 2: 12.0, 3: 6.0}) + np.roll(shape({4: 2.5, 5: 2.0}, width=4.0), 15, axis=0)
SMALL = shape({4: 9.0, 5: 7.0, 6: 4.0}, width=2.0, late=0.6)
MASKS = np.zeros((3, N_CHANNELS), dtype=bool)
MASKS[0, :4] = True  # the big neuron's filter does not reach its tail
MASKS[1, 3:8] = True
MASKS[2, 3:8] = True


def recording_of(rng, trains_and_shapes) -> NumpyRecording:
    n_samples = int(SECONDS * RATE)
    traces = rng.standard_normal((n_samples, N_CHANNELS)).astype(np.float32)
    for train, waveform in trains_and_shapes:
        for time in train:
            traces[time - PEAK:time - PEAK + N_TAPS] += waveform
    return NumpyRecording(traces, RATE)


def sorting_of(trains: list[np.ndarray], units: list[int], templates: list[np.ndarray], labels=None) -> Sorting:
    times = np.concatenate(trains)
    spike_units = np.concatenate([np.full(len(t), u) for t, u in zip(trains, units)])
    order = np.argsort(times, kind="stable")
    return Sorting(spike_times=times[order], spike_units=spike_units[order].astype(np.int32),
                   amplitudes=np.ones(len(times), np.float32), templates=np.stack(templates).astype(np.float32),
                   sampling_rate=RATE, filter_index=np.arange(len(templates)),
                   code_amplitudes=np.ones(len(times), np.float32),
                   provenance=SortProvenance(5.0, np.ones(N_CHANNELS, np.float32), "", "", ""), sort_labels=labels)


def dropped(sorting: Sorting, recording) -> Sorting:
    return drop_hollow_events(sorting, recording, np.ones(N_CHANNELS), MASKS[:sorting.n_units])


def held(after: Sorting, unit: int, times: np.ndarray) -> float:
    return float(np.isin(times, after.spike_times[after.spike_units == unit]).mean())


def test_a_units_events_on_a_neighbours_tail_at_a_wandering_lag_go_and_its_own_spikes_stay():
    # As on the 32-channel probe (recording seed 7): a small neuron's unit held events 13-20 samples
    # after a bigger neighbour's spikes, where its filter coded that neighbour's tail. A third neuron of
    # the opposite sign on the small one's channels fires on some of its spikes: as recorded those
    # windows hold little of the small neuron, with that neuron's spike taken out they hold all of it.
    rng = np.random.default_rng(0)
    n_samples = int(SECONDS * RATE)
    big, small, opposite = (spike_train(rng, n_samples, 12.0) for _ in range(3))
    together = small[5::12] + 1
    opposite = np.sort(np.concatenate([opposite[np.min(np.abs(opposite[:, None] - small[None, :]), axis=1) > 100],
                                       together]))
    recording = recording_of(rng, [(big, BIG), (small, SMALL), (opposite, -1.2 * SMALL)])
    tails = big[::3] + rng.integers(13, 21, len(big[::3]))
    tails = tails[np.min(np.abs(tails[:, None] - small[None, :]), axis=1) > 60]  # not on a small spike
    sorting = sorting_of([big, small, tails, opposite], [0, 1, 1, 2], [BIG, SMALL, -1.2 * SMALL])
    after = dropped(sorting, recording)
    assert held(after, 1, tails) < 0.1
    assert held(after, 1, small) == 1.0
    assert held(after, 0, big) == 1.0 and held(after, 2, opposite) == 1.0
    assert "of 1" in after.provenance.hollow_events


def test_a_spike_a_look_alike_coded_again_is_not_taken_out_of_its_own_window():
    # The look-alike unit 2 coded a third of the small neuron's spikes again, 1 sample later: taking its
    # median out at them takes the spike itself out, yet as recorded each window holds the small neuron.
    rng = np.random.default_rng(1)
    big, small = spike_train(rng, int(SECONDS * RATE), 12.0), spike_train(rng, int(SECONDS * RATE), 12.0)
    recording = recording_of(rng, [(big, BIG), (small, SMALL)])
    again = small[::3] + 1
    sorting = sorting_of([big, small, again], [0, 1, 2], [BIG, SMALL, 0.9 * SMALL])
    after = dropped(sorting, recording)
    assert held(after, 1, small) == 1.0
    assert after.n_spikes >= sorting.n_spikes - 5


def test_units_labelled_noise_and_units_without_hollow_events_keep_every_event():
    rng = np.random.default_rng(2)
    big, small = spike_train(rng, int(SECONDS * RATE), 12.0), spike_train(rng, int(SECONDS * RATE), 12.0)
    recording = recording_of(rng, [(big, BIG), (small, SMALL)])
    clean = dropped(sorting_of([big, small], [0, 1], [BIG, SMALL]), recording)
    assert clean.n_spikes == len(big) + len(small)
    assert clean.provenance.hollow_events == "no events dropped"
    tails = big[::3] + rng.integers(13, 21, len(big[::3]))
    residue = sorting_of([big, small, tails], [0, 1, 1], [BIG, SMALL], labels={1: "noise"})
    assert dropped(residue, recording).n_spikes == residue.n_spikes


def test_the_stacked_fit_beside_other_events_is_each_windows_own_least_squares():
    """UnitJudge solves every window's design as one stack per number of neighbours: it must give what
    solving each window alone gives, the size, its standard error, and the least-norm fit where two
    neighbours' medians coincide."""
    from engine.pipeline.hollow_events import UnitJudge

    rng = np.random.default_rng(3)
    length, n_channels = 12, 3
    reach = {u: np.arange(n_channels) for u in range(4)}
    medians = {u: rng.normal(size=(3 * length, n_channels)) for u in range(4)}
    # Unit 0 is judged; units 1-3 are the others, at times that give windows 0, 1, 2 or 3 neighbours
    # (two of unit 3's events at one time: a rank-deficient design).
    times = np.array([100, 205, 290, 295, 300, 310, 400, 404, 404, 500], dtype=np.int64)
    units = np.array([0, 1, 0, 2, 1, 0, 3, 3, 3, 0], dtype=np.int64)
    judge = UnitJudge(0, np.arange(n_channels), medians, reach, times, units, length)
    spike_times = np.array([100, 200, 300, 406, 600], dtype=np.int64)
    windows = rng.normal(size=(len(spike_times), length, n_channels))

    sizes, t = judge.fitted_beside_others(spike_times, windows)

    template = medians[0][length:2 * length].ravel()
    for i, at in enumerate(spike_times):
        near = np.flatnonzero((np.abs(times - at) < length) & (units != 0))
        design = np.stack([template] + [medians[units[e]][at - times[e] + length:at - times[e] + 2 * length].ravel()
                                        for e in near], axis=1)
        y = windows[i].ravel()
        fit, *_ = np.linalg.lstsq(design, y, rcond=None)
        residual = y - design @ fit
        variance = residual @ residual / (len(y) - design.shape[1]) * np.linalg.pinv(design.T @ design)[0, 0]
        assert np.isclose(sizes[i], fit[0], rtol=1e-9, atol=1e-12), (i, len(near))
        assert np.isclose(t[i], fit[0] / np.sqrt(variance), rtol=1e-6), (i, len(near))
    assert [int(np.count_nonzero((np.abs(times - at) < length) & (units != 0))) for at in spike_times] == [0, 1, 2, 3, 0]


def test_an_event_on_a_look_alike_neighbours_spike_goes_though_as_recorded_it_fits_above_the_bar():
    # As on the 32-channel probe (recording seed 1): a small neuron's unit held events 1-17 samples from a
    # neighbour's spikes whose shape on its channels is much like its own. As recorded such a window fits
    # the small unit's median at most of its size (above the bar); with the neighbour's spike taken out,
    # at none of it, surely (several standard errors under the bar).
    rng = np.random.default_rng(5)
    n_samples = int(SECONDS * RATE)
    mid, small = spike_train(rng, n_samples, 12.0), spike_train(rng, n_samples, 12.0)
    mid_shape = shape({4: 12.0, 5: 9.0, 6: 3.0}, width=2.5, late=0.5)
    recording = recording_of(rng, [(mid, mid_shape), (small, SMALL)])
    residue = mid[::3] + rng.integers(1, 4, len(mid[::3]))
    residue = residue[np.min(np.abs(residue[:, None] - small[None, :]), axis=1) > 60]
    big = spike_train(rng, n_samples, 1.0)[:40]  # unit 0, far away: only there to keep the masks' order
    sorting = sorting_of([big, small, residue, mid], [0, 1, 1, 2], [BIG, SMALL, mid_shape])

    after = dropped(sorting, recording)

    # Judged as recorded first, as before, every one of them stayed; those left sit nearer the bar.
    assert held(after, 1, residue) < 0.2
    assert held(after, 1, small) == 1.0 and held(after, 2, mid) == 1.0


def test_a_residual_units_copies_of_a_big_neurons_spikes_do_not_hollow_them_out():
    # As on the 32-channel probe (recording seed 0): a filter labelled noise coded a copy of the 24-SNR gt19's
    # spikes, a sample off, at most of them; read at its events, its median on gt19's channels is gt19's own
    # waveform, and beside it 116 of gt19's spikes fitted at nothing and went. A residual unit's median is
    # the bigger spikes its residue rides on, not a waveform of its own: it is not fitted beside them.
    rng = np.random.default_rng(6)
    n_samples = int(SECONDS * RATE)
    big, small = spike_train(rng, n_samples, 12.0), spike_train(rng, n_samples, 12.0)
    recording = recording_of(rng, [(big, BIG), (small, SMALL)])
    copies = big[rng.random(len(big)) < 0.9] - 1
    sorting = sorting_of([big, small, copies], [0, 1, 2], [BIG, SMALL, 0.3 * BIG], labels={2: "noise"})
    masks = MASKS.copy()
    masks[2] = True  # the residual filter reaches every channel, the big neuron's main ones included

    after = drop_hollow_events(sorting, recording, np.ones(N_CHANNELS), masks)

    assert held(after, 0, big) == 1.0
    assert held(after, 2, copies) == 1.0 and held(after, 1, small) == 1.0
