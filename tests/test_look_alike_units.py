"""Look-alike units' spikes classified again by their recorded waveforms: two neurons' spikes go back to
their own units; one neuron's two units trade nothing."""

import numpy as np

from engine.pipeline.look_alike_units import SEPARATION_SDS, _discriminant, look_alike_groups, reclassify_look_alikes
from engine.pipeline.sorting import Sorting, SortProvenance
from tests.test_unit_merge import DEAD, RATE, spike_train
from tests.test_waveform_split import N_CHANNELS, N_TAPS, recording_of, waveform

SECONDS = 60.0
NOISE = np.ones(N_CHANNELS, np.float32)  # the recordings' σ


def sorting_of(trains: list[np.ndarray], units: list[int], kinds: list[str], filters: list[int],
               labels: dict | None = None) -> Sorting:
    """A sort whose unit u holds the spikes of every train given it, its template kinds[u]'s waveform,
    from filter filters[u]; every spike's code 1 (its filter is the waveform in σ)."""
    times = np.concatenate(trains)
    spike_units = np.concatenate([np.full(len(t), u) for t, u in zip(trains, units)])
    order = np.argsort(times, kind="stable")
    return Sorting(spike_times=times[order], spike_units=spike_units[order].astype(np.int32),
                   amplitudes=np.full(len(times), 90.0, np.float32),
                   templates=np.stack([waveform(k) for k in kinds]).astype(np.float32), sampling_rate=RATE,
                   template_peak_taps=np.full(len(kinds), 20), filter_index=np.asarray(filters),
                   code_amplitudes=np.ones(len(times), np.float32),
                   provenance=SortProvenance(5.0, NOISE, "", "", "no filter split by amplitude"), sort_labels=labels)


def reclassified(sorting: Sorting, recording) -> Sorting:
    filters = np.stack([waveform("a"), waveform("b")]).astype(np.float32)[: int(sorting.filter_index.max()) + 1]
    return reclassify_look_alikes(sorting, recording, NOISE, filters, np.ones((len(filters), N_CHANNELS), bool), DEAD)


def held(sorting: Sorting, times: np.ndarray, unit: int) -> float:
    """The share of `times` that `unit` holds."""
    return float(np.isin(times, sorting.spike_times[sorting.spike_units == unit]).mean())


def test_two_neurons_of_one_filter_get_their_spikes_back_from_each_others_units():
    # As on SpikeInterface's tetrode (recording seed 0): two neurons of one size, 0.99 alike, whose
    # units hold a quarter and a tenth of each other's spikes. Their windows differ where "b" has its
    # second trough, and a discriminant of the windows tells them apart.
    rng = np.random.default_rng(0)
    first, second = (spike_train(rng, int(SECONDS * RATE), 12.0) for _ in range(2))
    recording = recording_of([first, second], ["a", "b"], SECONDS, rng)
    to_second, to_first = rng.random(len(first)) < 0.25, rng.random(len(second)) < 0.1
    sorting = sorting_of([first[~to_second], second[to_first], first[to_second], second[~to_first]], [0, 0, 1, 1],
                         ["a", "b"], [0, 0])
    assert look_alike_groups(sorting, NOISE, np.ones((1, N_CHANNELS), bool))[0] == [[1, 0]]
    after = reclassified(sorting, recording)
    assert held(after, first, 0) > 0.98 and held(after, second, 1) > 0.98
    assert held(after, first, 1) < 0.02 and held(after, second, 0) < 0.02
    assert after.n_spikes == sorting.n_spikes
    assert "moved between look-alike units" in after.provenance.look_alike_units
    # Between units of one filter a spike's code means the same in either: its amplitude stays.
    assert np.array_equal(after.amplitudes, sorting.amplitudes)


def test_one_neurons_spikes_in_two_units_move_nowhere():
    # One neuron in two units of one filter, split at random: the discriminant can only draw a line
    # through it, and the halves it leaves do not stand apart on the spikes it did not learn from.
    rng = np.random.default_rng(1)
    neuron = spike_train(rng, int(SECONDS * RATE), 24.0)
    recording = recording_of([neuron], ["a"], SECONDS, rng)
    half = rng.random(len(neuron)) < 0.5
    sorting = sorting_of([neuron[half], neuron[~half]], [0, 1], ["a", "a"], [0, 0])
    after = reclassified(sorting, recording)
    assert np.array_equal(after.spike_units, sorting.spike_units)
    assert after.provenance.look_alike_units == "no spikes moved between look-alike units"


def test_the_separation_of_a_line_through_one_cluster_is_under_the_bar_and_two_clusters_over_it():
    # The bar's reason, on Gaussian windows (30 values, σ 1): a cluster split at random, refined into
    # its two halves by the rounds, leaves them ~2.5 SDs apart; two clusters 6 σ apart stand ~6 apart.
    rng = np.random.default_rng(2)
    one = rng.standard_normal((3000, 30))
    assert _discriminant(one, rng.integers(0, 2, len(one))) is None
    centre = np.zeros(30)
    centre[0] = 6.0
    two = np.concatenate([rng.standard_normal((1500, 30)), rng.standard_normal((1500, 30)) + centre])
    truth = np.repeat([0, 1], 1500)
    mixed = np.where(rng.random(3000) < 0.3, 1 - truth, truth)  # 30 % of each in the other's class
    found = _discriminant(two, mixed)
    assert found is not None and found.separations[(0, 1)] > SEPARATION_SDS
    assert np.mean(found.decide(two, mixed) == truth) > 0.99


def test_a_unit_labelled_residual_neither_gives_nor_takes():
    rng = np.random.default_rng(3)
    first, second = (spike_train(rng, int(SECONDS * RATE), 12.0) for _ in range(2))
    recording = recording_of([first, second], ["a", "b"], SECONDS, rng)
    to_second = rng.random(len(first)) < 0.25
    sorting = sorting_of([first[~to_second], first[to_second], second], [0, 1, 1], ["a", "b"], [0, 0],
                         labels={1: "noise"})
    after = reclassified(sorting, recording)
    assert np.array_equal(after.spike_units, sorting.spike_units)
    assert after.provenance.look_alike_units == "no look-alike units"
