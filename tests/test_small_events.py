"""Events far smaller than their unit's own spikes are set apart in a unit of their own; a neuron whose spikes
shrink slowly over the recording (drift) keeps all of them."""

import numpy as np

from engine.pipeline.small_events import SMALL_EVENT_FRACTION, separate_small_events
from engine.pipeline.sorting import Sorting, SortProvenance
from tests.test_unit_merge import RATE, spike_train

N_SAMPLES = int(120 * RATE)


def one_unit(times: np.ndarray, sizes: np.ndarray) -> Sorting:
    order = np.argsort(times, kind="stable")
    return Sorting(spike_times=times[order], spike_units=np.zeros(len(times), np.int32),
                   amplitudes=sizes[order], templates=np.ones((1, 30, 4), np.float32), sampling_rate=RATE,
                   filter_index=np.array([0]), code_amplitudes=(sizes / 5.0)[order],
                   provenance=SortProvenance(5.0, np.ones(4, np.float32), "", "", "no filter split by amplitude"))


def test_a_units_residual_events_are_set_apart_and_its_neurons_spikes_stay():
    rng = np.random.default_rng(0)
    neuron = spike_train(rng, N_SAMPLES, 15.0)
    residuals = np.sort(rng.integers(100, N_SAMPLES - 100, 120))  # a neighbour's spikes, coded at a fifth
    sizes = np.concatenate([rng.normal(100, 10, len(neuron)), rng.normal(20, 5, len(residuals))])
    split = separate_small_events(one_unit(np.concatenate([neuron, residuals]), sizes))
    assert split.n_units == 2 and list(split.filter_index) == [0, 0]
    assert set(split.spike_units[np.isin(split.spike_times, neuron)]) == {0}
    assert set(split.spike_units[np.isin(split.spike_times, residuals)]) == {1}
    assert "small events" in split.provenance.amplitude_splits and "120 of" in split.provenance.amplitude_splits
    # The new unit's template is its parent's at the small events' own size.
    assert split.templates[1].max() < 0.5 * split.templates[0].max()


def test_a_neuron_that_shrinks_with_drift_and_a_few_small_events_stay_one_unit():
    rng = np.random.default_rng(1)
    neuron = spike_train(rng, N_SAMPLES, 15.0)
    # Its spikes shrink to a seventh over the recording: the last ones are under SMALL_EVENT_FRACTION of the first.
    drift = np.linspace(1.0, 0.15, len(neuron))
    sizes = rng.normal(100, 8, len(neuron)) * drift
    assert sizes[-50:].max() < SMALL_EVENT_FRACTION * np.median(sizes[:200])
    assert separate_small_events(one_unit(neuron, sizes)).n_units == 1
    # Too few small events to make a unit of: they stay.
    few = np.sort(rng.integers(100, N_SAMPLES - 100, 10))
    both = one_unit(np.concatenate([neuron, few]), np.concatenate([rng.normal(100, 8, len(neuron)), np.full(10, 20.0)]))
    assert separate_small_events(both).n_units == 1
