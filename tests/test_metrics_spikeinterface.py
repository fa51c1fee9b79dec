"""Our quality metrics against SpikeInterface's on one generated sorting: same definitions, same numbers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from engine.curation.metrics import MetricSettings, compute_unit_metrics, l_ratios

si = pytest.importorskip("spikeinterface.full")

DURATION_S = 60.0
PRESENCE_BIN_S = 3.0  # 20 bins, as ours uses on a short recording


@pytest.fixture(scope="module")
def analyzer():
    recording, sorting = si.generate_ground_truth_recording(
        durations=[DURATION_S], sampling_frequency=20_000.0, num_channels=4, num_units=5, seed=2
    )
    # Contamination to measure: a few spikes 0.5 ms after others in unit 0.
    times = sorting.get_unit_spike_train(sorting.unit_ids[0])
    extra = times[::40][:30] + 10
    # Integer unit ids, as ours are.
    trains = {i: sorting.get_unit_spike_train(u) for i, u in enumerate(sorting.unit_ids)}
    trains[0] = np.sort(np.concatenate([times, extra]))
    sorting = si.NumpySorting.from_unit_dict([trains], sampling_frequency=sorting.sampling_frequency)
    result = si.create_sorting_analyzer(sorting, recording, sparse=False, format="memory")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result.compute(["random_spikes", "waveforms", "templates", "noise_levels", "spike_amplitudes"])
        result.compute("principal_components", n_components=3, mode="concatenated")
    return result


def spikeinterface_metrics(analyzer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = si.compute_quality_metrics(
            analyzer,
            metric_names=[
                "firing_rate", "presence_ratio", "snr", "isi_violation", "rp_violation",
                "amplitude_cutoff", "amplitude_median",
            ],
            metric_params={"presence_ratio": {"bin_duration_s": PRESENCE_BIN_S}},
        )
    return metrics


def test_metrics_match_spikeinterface(analyzer):
    theirs = spikeinterface_metrics(analyzer)
    sorting = analyzer.sorting
    fs = sorting.sampling_frequency
    vector = sorting.to_spike_vector()
    times, units = vector["sample_index"], sorting.unit_ids[vector["unit_index"]]
    amplitudes = analyzer.get_extension("spike_amplitudes").get_data()  # (n_spikes,) µV, spike-vector order
    templates = analyzer.get_extension("templates").get_data()  # (n_units, n_taps, n_channels)
    noise = analyzer.get_extension("noise_levels").get_data()
    ours = compute_unit_metrics(
        times, units, sorting.unit_ids, fs, DURATION_S, amplitudes=amplitudes,
        templates={u: templates[i] for i, u in enumerate(sorting.unit_ids)}, noise_levels=noise,
        settings=MetricSettings(presence_bin_s=PRESENCE_BIN_S),
    )
    assert ours[sorting.unit_ids[0]].rp_violations > 0  # the contamination was seen
    for unit in sorting.unit_ids:
        mine, row = ours[unit], theirs.loc[unit]
        assert mine.firing_rate == pytest.approx(row["firing_rate"], rel=1e-9)
        assert mine.presence_ratio == pytest.approx(row["presence_ratio"])
        assert mine.snr == pytest.approx(row["snr"], rel=1e-5)
        assert mine.isi_violation_ratio == pytest.approx(row["isi_violations_ratio"], rel=1e-9)
        assert mine.isi_violation_count == row["isi_violations_count"]
        assert mine.rp_violations == row["rp_violations"]
        assert mine.rp_contamination == pytest.approx(row["rp_contamination"], rel=1e-9, nan_ok=True)
        assert mine.amplitude_cutoff == pytest.approx(row["amplitude_cutoff"], rel=1e-9, nan_ok=True)
        # SpikeInterface's amplitudes keep the sign of the trough.
        assert abs(mine.amplitude_median) == pytest.approx(abs(row["amplitude_median"]), rel=1e-6)


def test_l_ratio_matches_spikeinterface_on_the_same_features(analyzer):
    from spikeinterface.metrics.quality.pca_metrics import mahalanobis_metrics

    pcs = analyzer.get_extension("principal_components").get_data()  # (n_spikes, n_features), concatenated
    sorting = analyzer.sorting
    sampled = analyzer.get_extension("random_spikes").get_data()  # the spikes the components were computed for
    labels = sorting.unit_ids[sorting.to_spike_vector()["unit_index"][sampled]]
    ours = l_ratios(pcs, labels, sorting.unit_ids)
    assert all(np.isfinite(list(ours.values())))
    for unit in sorting.unit_ids:
        _isolation, theirs = mahalanobis_metrics(pcs, labels, unit)
        # Theirs works in the components' float32, ours in float64.
        assert ours[unit] == pytest.approx(theirs, rel=1e-4, abs=1e-12)
