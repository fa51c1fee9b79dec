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


def test_a_faint_units_lower_mode_at_the_noises_level_is_set_apart():
    # As on the drifting generator's static 384-channel probe: a faint neuron's filter coded, besides its 180
    # spikes (codes ~13, λ 5), about as many events of no neuron just over λ (~7): over half its size, not
    # small events by SMALL_EVENT_FRACTION, and Otsu's groups under the amplitude split's 5 SDs apart.
    rng = np.random.default_rng(2)
    neuron = spike_train(rng, N_SAMPLES, 2.0)
    noise = np.sort(rng.integers(100, N_SAMPLES - 100, 150))
    sizes = np.concatenate([5.0 * 13.0 * np.exp(0.15 * rng.standard_normal(len(neuron))),
                            5.0 * 7.0 * np.exp(0.12 * rng.standard_normal(len(noise)))])
    split = separate_small_events(one_unit(np.concatenate([neuron, noise]), sizes))
    assert split.n_units == 2
    assert np.mean(split.spike_units[np.isin(split.spike_times, noise)] == 1) > 0.9
    assert np.mean(split.spike_units[np.isin(split.spike_times, neuron)] == 0) > 0.9  # its smallest few go with them
    # The same two groups four times bigger, the lower one far above the noise's level: one neuron's two sizes,
    # for the amplitude split and the spike trains to judge, not set apart here.
    assert separate_small_events(one_unit(np.concatenate([neuron, noise]), 4.0 * sizes)).n_units == 1
