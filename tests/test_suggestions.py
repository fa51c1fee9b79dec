"""Merge suggestions: split units come first, for the right reasons, and actions recompute only what they touched."""

from __future__ import annotations

import numpy as np
import pytest

from engine.curation.model import Curation
from engine.curation.suggestions import MergeSuggestions, SuggestionSettings
from engine.evaluation.simulator import TETRODE, simulate
from engine.pipeline.sorting import Sorting

DURATION_S = 60.0


@pytest.fixture(scope="module")
def truth():
    settings = dict(TETRODE, duration_s=DURATION_S, firing_rates=(20.0, 25.0, 15.0, 30.0, 10.0, 12.0, 18.0, 22.0))
    return simulate(**settings, seed=2)[1]


def split_sorting(truth, how: str, unit: int = 3) -> Sorting:
    """The ground truth with `unit` cut in two ("random" or "time"); the second half is unit n_units."""
    sorting = truth.to_sorting()
    units = sorting.spike_units.copy()
    spikes = np.flatnonzero(units == unit)
    if how == "random":
        moved = spikes[np.random.default_rng(0).random(len(spikes)) < 0.5]
    else:
        moved = spikes[sorting.spike_times[spikes] >= sorting.spike_times[spikes].mean()]
    units[moved] = truth.n_units
    templates = np.concatenate([sorting.templates, sorting.templates[unit : unit + 1]])
    return Sorting(sorting.spike_times, units, sorting.amplitudes, templates, sorting.sampling_rate,
                   channel_positions=sorting.channel_positions)


def test_a_unit_split_at_random_is_the_top_suggestion_with_a_refractory_dip(truth):
    sorting = split_sorting(truth, "random")
    suggestions = MergeSuggestions(Curation(sorting.spike_units), sorting, DURATION_S)
    top = suggestions.ranked()[0]
    assert top.units == (3, truth.n_units)
    assert top.refractory > 0.5 and "refractory dip" in top.reason
    assert suggestions.for_unit(3)[0].partner_of(3) == truth.n_units
    # Two different neurons firing independently show no dip.
    others = [e for e in suggestions.ranked() if e.refractory_expected >= 10 and e.units != top.units]
    assert others and all(e.refractory < 0 for e in others)
    assert all(0 <= e.score <= 1 for e in suggestions.ranked())


def test_a_unit_split_in_time_continues_in_amplitude(truth):
    sorting = split_sorting(truth, "time")
    suggestions = MergeSuggestions(Curation(sorting.spike_units), sorting, DURATION_S)
    top = suggestions.ranked()[0]
    assert top.units == (3, truth.n_units)
    assert top.amplitude > 0.5 and "amplitudes match" in top.reason
    assert top.refractory == 0  # they hardly overlap in time: the correlogram cannot tell


def test_code_coactivation_counts_only_for_a_crsae_sort(truth):
    sorting = split_sorting(truth, "random")
    # One filter of a CRsAE also fires on a third of the other's events: two filters coding one neuron.
    echoes = sorting.spike_times[sorting.spike_units == 3][::3] + 1
    times = np.concatenate([sorting.spike_times, echoes])
    units = np.concatenate([sorting.spike_units, np.full(len(echoes), truth.n_units)])
    amplitudes = np.concatenate([sorting.amplitudes, np.full(len(echoes), np.median(sorting.amplitudes))])
    crsae = Sorting(times, units, amplitudes, sorting.templates, sorting.sampling_rate,
                    channel_positions=sorting.channel_positions, filter_index=np.arange(9))
    plain = Sorting(times, units, amplitudes, sorting.templates, sorting.sampling_rate,
                    channel_positions=sorting.channel_positions)
    with_codes = MergeSuggestions(Curation(crsae.spike_units), crsae, DURATION_S).evidence(3, truth.n_units)
    without = MergeSuggestions(Curation(plain.spike_units), plain, DURATION_S).evidence(3, truth.n_units)
    assert with_codes.coactivation > 0.5 and "co-fire" in with_codes.reason
    assert without.coactivation == 0 and with_codes.score > without.score


def test_after_an_action_only_the_touched_units_are_weighed(truth, monkeypatch):
    sorting = split_sorting(truth, "random")
    curation = Curation(sorting.spike_units)
    suggestions = MergeSuggestions(curation, sorting, DURATION_S, SuggestionSettings(n_candidates=3))
    curation.on_change(suggestions.update)
    weighed = []
    original = MergeSuggestions._weigh
    monkeypatch.setattr(MergeSuggestions, "_weigh",
                        lambda self, pairs, stop: weighed.extend(pairs) or original(self, pairs, stop))
    before = {e.units: e for e in suggestions.ranked()}

    merged = curation.merge([3, truth.n_units]).added[0]
    assert weighed and all(merged in pair for pair in weighed)
    assert not any({3, truth.n_units} & set(e.units) for e in suggestions.ranked())
    assert any(merged in e.units for e in suggestions.ranked())

    weighed.clear()
    curation.undo()
    assert not weighed  # everything about the revived units was known
    assert {e.units: e for e in suggestions.ranked()} == before


def test_rejected_pairs_are_left_out(truth):
    sorting = split_sorting(truth, "random")
    suggestions = MergeSuggestions(Curation(sorting.spike_units), sorting, DURATION_S)
    pair = (3, truth.n_units)
    assert suggestions.ranked()[0].units == pair
    assert all(e.units != pair for e in suggestions.ranked(rejected=[pair[::-1]]))
    assert all(e.units != pair for e in suggestions.for_unit(3, rejected=[pair]))


def test_suggestions_computed_on_a_copy_follow_the_live_curation(truth):
    sorting = split_sorting(truth, "random")
    live = Curation(sorting.spike_units)
    suggestions = MergeSuggestions(Curation(live.spike_clusters.copy()), sorting, DURATION_S)
    merged = live.merge([0, 1]).added[0]  # done while the copy was being weighed
    suggestions.follow(live)
    units = {u for e in suggestions.ranked() for u in e.units}
    assert merged in units and not {0, 1} & units
    assert suggestions.ranked()[0].units == (3, truth.n_units)


def test_data_templates_are_mean_waveforms_on_the_channels_near_the_unit():
    from engine.curation.suggestions import data_template_source
    from engine.io.recording import NumpyRecording
    from engine.pipeline.preprocessing import PreprocessedRecording

    traces, truth = simulate(**dict(TETRODE, duration_s=10.0), seed=4)
    recording = PreprocessedRecording(NumpyRecording(traces, truth.sampling_rate, channel_positions=truth.channel_positions))
    sorting = truth.to_sorting()
    spikes = np.flatnonzero(sorting.spike_units == 5)
    template, noise_energy = data_template_source(recording, sorting)(5, spikes)
    main = sorting.main_channels()[5]
    peak = np.abs(template[:, main]).max()
    band_passed = truth.bandpassed_waveforms()[5, :, main]
    assert peak == pytest.approx(np.abs(band_passed).max(), rel=0.15)
    # What averaging leaves of the spikes' spread: at least the background noise, σ² per value over
    # the spikes averaged; more where other units' spikes overlap (8 busy units here).
    n_taps, n_averaged = template.shape[0], min(len(spikes), 300)
    background = n_taps * np.sum(recording.noise_levels.astype(float) ** 2) / n_averaged
    assert 0.8 * background < noise_energy < 5 * background
    assert noise_energy < 0.1 * np.sum(template.astype(float) ** 2)
    near, _ = data_template_source(recording, sorting, max_channels=2)(5, spikes)
    assert np.count_nonzero(np.abs(near).max(axis=0)) == 2 and np.abs(near[:, main]).max() == pytest.approx(peak)


def test_noisy_templates_are_compared_as_if_noiseless():
    """Two noisy estimates of one shape: their cosine, corrected for the noise, is near 1."""
    rng = np.random.default_rng(3)
    shape = np.zeros((40, 2), np.float32)
    shape[10:20, 0] = -np.hanning(10) * 30  # µV
    noise_energy = 40 * 2 * 4.0**2  # σ = 4 µV left on every value
    estimates = {u: shape + rng.normal(0, 4.0, shape.shape).astype(np.float32) for u in (0, 1)}
    times = np.sort(rng.choice(600_000, 400, replace=False))
    units = np.arange(400) % 2
    sorting = Sorting(times, units, np.full(400, 30.0), np.stack([shape, shape]), 30_000.0)
    curation = Curation(units)
    noiseless = MergeSuggestions(curation, sorting, 20.0, template_source=lambda u, _s: estimates[u])
    corrected = MergeSuggestions(curation, sorting, 20.0, template_source=lambda u, _s: (estimates[u], noise_energy))
    raw = noiseless.evidence(0, 1).template_similarity
    assert raw < 0.85
    assert corrected.evidence(0, 1).template_similarity == pytest.approx(1.0, abs=0.1)
