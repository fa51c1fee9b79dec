"""Copies of a unit's spikes that another unit coded at a fixed lag are dropped; nothing else is."""

import numpy as np

from engine.io.recording import NumpyRecording
from engine.pipeline.locked_events import drop_locked_events, find_lock
from tests.test_spike_reassignment import NOISE, SECONDS, neurons, sorting_of
from tests.test_unit_merge import RATE, spike_train
from tests.test_waveform_split import N_CHANNELS, N_TAPS, recording_of, waveform

WINDOW, FLANK = 30, (150, 450)  # 1 ms, 5-15 ms at 30 kHz


def dropped(sorting, recording):
    return drop_locked_events(sorting, recording, NOISE, np.ones((sorting.n_units, N_CHANNELS), bool))


def held(after, unit: int, times: np.ndarray) -> float:
    return float(np.isin(times, after.spike_times[after.spike_units == unit]).mean())


def test_a_lock_is_the_events_at_one_lag_far_above_what_the_flanks_give():
    rng = np.random.default_rng(0)
    a = spike_train(rng, int(SECONDS * RATE), 12.0)
    b_own = spike_train(rng, int(SECONDS * RATE), 12.0)
    copied = a[::4]
    times = np.concatenate([a, b_own, copied + 5])
    order = np.argsort(times, kind="stable")
    unit = np.concatenate([np.zeros(len(a)), np.ones(len(b_own) + len(copied))])[order]
    times = times[order]
    lock = find_lock(times, np.flatnonzero(unit == 0), np.flatnonzero(unit == 1), WINDOW, FLANK)
    assert lock is not None and lock.lag == 5
    assert np.isin(copied + 5, times[lock.b_events]).all()
    lags = times[lock.b_events] - times[lock.a_events]
    assert np.all((lags >= 4) & (lags <= 6))
    assert len(lock.b_events) < len(copied) + 10  # chance coincidences at that lag: a few
    # The same events at lags spread over the window: no lock.
    spread = copied + rng.integers(-WINDOW, WINDOW + 1, len(copied))
    times = np.sort(np.concatenate([a, b_own, spread]))
    unit = np.isin(times, a).astype(int) ^ 1
    assert find_lock(times, np.flatnonzero(unit == 0), np.flatnonzero(unit == 1), WINDOW, FLANK) is None


def test_a_lock_reaches_the_lags_a_copy_jitters_over_and_no_further():
    # As on the 32-channel probe (recording seed 4, sorter seed 4): one unit's copies of a neighbour's
    # spikes lay 2 samples either side of their most frequent lag (118 at it, 20-59 at each lag beside it,
    # 2-3 a lag by chance); a peak 1 sample wide left a third of them.
    rng = np.random.default_rng(5)
    a = spike_train(rng, int(SECONDS * RATE), 12.0)
    b_own = spike_train(rng, int(SECONDS * RATE), 12.0)
    copied = a[::3]
    jitter = rng.choice([-2, -1, 0, 0, 0, 1, 2], len(copied))
    times = np.concatenate([a, b_own, copied + 5 + jitter])
    order = np.argsort(times, kind="stable")
    unit = np.concatenate([np.zeros(len(a)), np.ones(len(b_own) + len(copied))])[order]
    times = times[order]
    lock = find_lock(times, np.flatnonzero(unit == 0), np.flatnonzero(unit == 1), WINDOW, FLANK, reach=5)
    assert lock is not None and 4 <= lock.lag <= 6 and lock.lags == (3, 7)
    assert np.isin(copied + 5 + jitter, times[lock.b_events]).all()
    assert len(lock.b_events) < len(copied) + 15
    # Without the reach, only the peak's lags.
    narrow = find_lock(times, np.flatnonzero(unit == 0), np.flatnonzero(unit == 1), WINDOW, FLANK)
    assert narrow.lags[1] - narrow.lags[0] == 2 and len(narrow.b_events) < len(lock.b_events) - 50


def test_a_units_copies_of_a_neighbours_spikes_go_and_its_own_spikes_stay():
    # As on the 32-channel probe (recording seed 3): a 5-SNR neuron's unit held copies of four bigger
    # neighbours' spikes, each at its own fixed lag. Here unit 0 (neuron "c") also coded a third of
    # neuron "a"'s spikes, 2 samples after them.
    rng = np.random.default_rng(1)
    (own, other), recording = neurons(rng, ["c", "a"])
    copies = other[::3] + 2
    sorting = sorting_of([own, copies, other], [0, 0, 1], ["c", "a"])
    after = dropped(sorting, recording)
    assert held(after, 0, copies) < 0.05
    assert held(after, 0, own) > 0.99
    assert held(after, 1, other) == 1.0
    assert "of 0 copying 1" in after.provenance.locked_events


def test_the_units_own_spikes_at_the_locks_lag_stay_where_the_recording_holds_them():
    # A lock's lags also hold the copying unit's own spikes that fell there by chance (on the 32-channel
    # probe, recording seed 7: 19 of the 5-SNR gt6's spikes went with its unit's copies of neighbours').
    # Here neuron "c" also fires 2 samples after every 15th spike of "a": those are its spikes, as the
    # recording holds them, beside the copies its unit coded at the same lag.
    rng = np.random.default_rng(1)
    own, other = (spike_train(rng, int(SECONDS * RATE), 12.0) for _ in range(2))
    by_chance = other[1::15] + 2  # never one of the copied spikes (other[::3])
    own = own[np.min(np.abs(own[:, None] - other[None, :]), axis=1) > 40]  # only those at the lag are near "a"
    recording = recording_of([np.concatenate([own, by_chance]), other], ["c", "a"], SECONDS, rng)
    copies = other[::3] + 2
    sorting = sorting_of([own, by_chance, copies, other], [0, 0, 0, 1], ["c", "a"])

    after = dropped(sorting, recording)

    assert held(after, 0, copies) < 0.05
    assert held(after, 0, by_chance) == 1.0 and held(after, 0, own) == 1.0
    assert held(after, 1, other) == 1.0
    assert "the recording holds" in after.provenance.locked_events


def test_the_copy_is_told_by_the_recording_not_by_the_template_size():
    # As on the same probe: the 5-SNR neuron's unit and a 6.6-SNR neuron's both coded the latter's spikes
    # at lag 0; the first unit's template is the bigger, yet it holds the copies.
    rng = np.random.default_rng(2)
    n_samples = int(SECONDS * RATE)
    big, small = spike_train(rng, n_samples, 12.0), spike_train(rng, n_samples, 12.0)
    traces = rng.standard_normal((n_samples, N_CHANNELS)).astype(np.float32)
    for times, shape in ((big, waveform("c")), (small, 0.5 * waveform("a"))):
        for time in times:
            traces[time - 20 : time - 20 + N_TAPS] += shape
    recording = NumpyRecording(traces, RATE)
    copies = small[::3]
    sorting = sorting_of([big, copies, small], [0, 0, 1], ["c", 0.5 * waveform("a")])
    after = dropped(sorting, recording)
    assert held(after, 1, small) == 1.0  # the small neuron keeps its spikes
    assert held(after, 0, big) > 0.99
    assert after.n_spikes <= sorting.n_spikes - 0.95 * len(copies)


def test_independent_units_and_units_labelled_noise_keep_every_event():
    rng = np.random.default_rng(3)
    (first, second), recording = neurons(rng, ["c", "a"])
    independent = dropped(sorting_of([first, second], [0, 1], ["c", "a"]), recording)
    assert independent.n_spikes == len(first) + len(second)
    assert independent.provenance.locked_events == "no events dropped"
    # A unit the sort labelled noise holds residue by its label; its copies are left for the person to see.
    copies = second[::3] + 2
    residue = sorting_of([first, copies, second], [0, 0, 1], ["c", "a"], labels={0: "noise"})
    assert dropped(residue, recording).n_spikes == residue.n_spikes
