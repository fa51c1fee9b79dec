import numpy as np
import pytest

from engine.curation.model import Curation
from engine.curation.metrics import (
    MetricsCache,
    MetricSettings,
    compute_unit_metrics,
    correlograms,
    isi_histogram,
    metrics_to_phy_columns,
    unit_metrics,
)
from engine.pipeline.sorting import Sorting

FS = 10_000.0  # Hz: 1 ms = 10 samples


def brute_force_correlograms(times, clusters, unit_ids, bin_samples, half_bins):
    ccg = np.zeros((len(unit_ids), len(unit_ids), 2 * half_bins + 1), dtype=np.int64)
    rows = {u: i for i, u in enumerate(unit_ids)}
    for a in range(len(times)):
        for b in range(len(times)):
            if a == b or clusters[a] not in rows or clusters[b] not in rows:
                continue
            lag = times[b] - times[a]
            lag_bin = int(np.sign(lag) * np.floor((abs(lag) + bin_samples / 2) / bin_samples))
            if abs(lag_bin) <= half_bins:
                ccg[rows[clusters[a]], rows[clusters[b]], half_bins + lag_bin] += 1
    return ccg


def test_rate_count_and_amplitude():
    metrics = unit_metrics(np.arange(0, 100_000, 1000), FS, duration_s=10.0, amplitudes=np.arange(100.0))
    assert metrics.n_spikes == 100
    assert metrics.firing_rate == pytest.approx(10.0)
    assert metrics.amplitude_median == pytest.approx(49.5)
    assert np.isnan(unit_metrics(np.arange(5), FS, 1.0).amplitude_median)


def test_isi_violations_follow_hill_et_al():
    # 100 spikes 100 ms apart, plus 4 extra spikes 1 ms after some of them.
    times = np.concatenate([np.arange(100) * 1000, [10, 2010, 5010, 7010]])
    metrics = unit_metrics(times, FS, duration_s=10.0)
    assert metrics.isi_violation_count == 4
    expected_ratio = 4 * 10.0 / (2 * 104**2 * 0.0015)
    assert metrics.isi_violation_ratio == pytest.approx(expected_ratio)

    censored = unit_metrics(times, FS, 10.0, settings=MetricSettings(refractory_ms=1.5, censored_ms=0.5))
    assert censored.isi_violation_ratio == pytest.approx(4 * 10.0 / (2 * 104**2 * 0.001))


def test_isi_violation_threshold_is_strict():
    # ISIs of exactly 1.5 ms (15 samples) are not violations; 14 samples are.
    assert unit_metrics(np.array([0, 15, 30]), FS, 1.0).isi_violation_count == 0
    assert unit_metrics(np.array([0, 14, 100]), FS, 1.0).isi_violation_count == 1
    assert np.isnan(unit_metrics(np.array([], dtype=np.int64), FS, 1.0).isi_violation_ratio)


def test_presence_ratio_uses_20_bins_when_short_and_60s_bins_when_long():
    first_half = np.linspace(0, 49.9, 200) * FS  # spikes in the first 50 s of 100 s
    assert unit_metrics(first_half, FS, duration_s=100.0).presence_ratio == pytest.approx(0.5)
    one_per_minute = (np.arange(30) * 60 + 1) * FS  # 30 of the 60 one-minute bins of an hour
    assert unit_metrics(one_per_minute, FS, duration_s=3600.0).presence_ratio == pytest.approx(0.5)


def test_snr_is_template_peak_over_main_channel_noise():
    template = np.zeros((20, 4))  # (n_taps, n_channels)
    template[10, 2] = -80.0
    template[11, 2] = 30.0
    template[10, 0] = -50.0
    noise = np.array([1.0, 1.0, 10.0, 1.0])
    with_noise = unit_metrics(np.arange(3), FS, 1.0, template=template, noise_levels=noise)
    assert with_noise.snr == pytest.approx(8.0)
    assert np.isnan(unit_metrics(np.arange(3), FS, 1.0, template=template).snr)


def test_compute_unit_metrics_matches_one_unit_at_a_time():
    rng = np.random.default_rng(3)
    times = np.sort(rng.integers(0, int(20 * FS), 3000))
    clusters = rng.integers(0, 4, 3000)
    amplitudes = rng.normal(50, 5, 3000)
    templates = rng.normal(size=(4, 20, 3))  # (n_units, n_taps, n_channels)
    noise = np.ones(3)

    result = compute_unit_metrics(times, clusters, [3, 1], FS, 20.0, amplitudes, templates, noise)
    assert list(result) == [3, 1]
    for unit in (3, 1):
        mine = clusters == unit
        assert result[unit] == unit_metrics(times[mine], FS, 20.0, amplitudes[mine], templates[unit], noise)

    by_dict = compute_unit_metrics(
        times, clusters, [1, 2], FS, 20.0, templates={1: templates[1]}, noise_levels=noise
    )
    assert by_dict[1].snr == result[1].snr and np.isnan(by_dict[2].snr)


def make_sorting(rng, n_spikes=4000, n_units=6):
    return Sorting(
        spike_times=np.sort(rng.integers(0, int(60 * FS), n_spikes)),
        spike_units=rng.integers(0, n_units, n_spikes),
        amplitudes=rng.normal(60, 10, n_spikes),
        templates=rng.normal(size=(n_units, 16, 4)),
        sampling_rate=FS,
    )


def test_metrics_cache_tracks_curation_like_a_full_recompute():
    rng = np.random.default_rng(5)
    sorting = make_sorting(rng)
    noise = np.full(4, 0.5)
    curation = Curation(sorting.spike_units)
    cache = MetricsCache(curation, sorting, duration_s=60.0, noise_levels=noise)
    curation.on_change(cache.update)

    merged = curation.merge([0, 1]).added[0]
    curation.split(curation.spikes_of(2)[::3])
    curation.label(3, "good")
    curation.undo()
    curation.undo()

    assert list(cache.metrics) == curation.unit_ids.tolist()
    # A merged unit's template is the spike-weighted mean of its parents'.
    n0, n1 = (sorting.spike_units == 0).sum(), (sorting.spike_units == 1).sum()
    merged_template = (n0 * sorting.templates[0] + n1 * sorting.templates[1]) / (n0 + n1)
    templates = {**{u: sorting.templates[u] for u in range(6)}, merged: merged_template}
    expected = compute_unit_metrics(
        sorting.spike_times, curation.spike_clusters, curation.unit_ids, FS, 60.0,
        sorting.amplitudes, templates, noise,
    )
    assert cache.metrics.keys() == expected.keys()
    for unit, metrics in expected.items():
        cached = cache.metrics[unit]
        assert cached.snr == pytest.approx(metrics.snr)
        assert (cached.n_spikes, cached.amplitude_median) == (metrics.n_spikes, metrics.amplitude_median)
        assert (cached.isi_violation_count, cached.presence_ratio) == (
            metrics.isi_violation_count,
            metrics.presence_ratio,
        )


def test_metrics_cache_drops_deleted_units():
    rng = np.random.default_rng(6)
    sorting = make_sorting(rng)
    curation = Curation(sorting.spike_units)
    cache = MetricsCache(curation, sorting, duration_s=60.0)
    cache.update(curation.merge([4, 5]))
    assert sorted(cache.metrics) == [0, 1, 2, 3, 6]
    assert cache.metrics[6].n_spikes == curation.spike_count(6)


def test_correlograms_match_brute_force():
    rng = np.random.default_rng(11)
    times = np.sort(rng.integers(0, int(2 * FS), 300))
    times[50] = times[49]  # a simultaneous pair
    clusters = rng.integers(0, 4, 300)

    ccg = correlograms(times, clusters, [2, 0, 3], FS, bin_ms=1.0, window_ms=10.0)
    assert ccg.shape == (3, 3, 11) and ccg.dtype == np.int64
    assert np.array_equal(ccg, brute_force_correlograms(times, clusters, [2, 0, 3], 10.0, 5))
    assert np.array_equal(ccg[1, 0], ccg[0, 1, ::-1])
    assert ccg.sum() > 0


def test_correlogram_bins_are_centred_on_multiples_of_the_bin():
    # Lags of 0.4 ms and 1.6 ms land in the 0 and +2 ms bins, and mirror.
    ccg = correlograms(np.array([0, 4, 20]), np.array([0, 0, 1]), [0, 1], FS, bin_ms=1.0, window_ms=4.0)
    assert ccg[0, 0].tolist() == [0, 0, 2, 0, 0]
    assert ccg[0, 1].tolist() == [0, 0, 0, 0, 2]  # 2.0 ms and 1.6 ms after each spike of unit 0
    assert ccg[1, 0].tolist() == [2, 0, 0, 0, 0]


def test_isi_histogram():
    counts, edges = isi_histogram(np.array([0, 3, 8, 18, 1000]), FS, bin_ms=0.5, max_ms=2.0)
    assert edges.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert counts.tolist() == [1, 1, 1, 0]  # ISIs 0.3, 0.5, 1.0 ms; 98.2 ms is beyond max_ms


def test_phy_columns_carry_the_metrics():
    metrics = compute_unit_metrics(np.arange(20), np.repeat([0, 1], 10), [0, 1], FS, 2.0)
    columns = metrics_to_phy_columns(metrics, {0: 120.0, 1: 80.5})
    assert columns["fr"] == {0: 5.0, 1: 5.0}
    assert columns["ptp_uv"] == {0: 120.0, 1: 80.5}
    assert set(columns) == {
        "fr", "ptp_uv", "snr", "isi_viol", "presence_ratio", "rp_contamination", "amplitude_cutoff", "l_ratio"
    }


def test_metrics_cache_measures_l_ratio_of_new_units_on_the_feature_sample():
    rng = np.random.default_rng(8)
    sorting = make_sorting(rng, n_units=3)
    # Units 0 and 1 overlap in feature space, unit 2 lies far away.
    centres = np.array([[0.0, 0.0], [0.5, 0.0], [20.0, 20.0]])
    features = centres[sorting.spike_units] + rng.normal(size=(sorting.n_spikes, 2))
    sample = np.arange(0, sorting.n_spikes, 2)
    curation = Curation(sorting.spike_units)
    cache = MetricsCache(curation, sorting, 60.0, feature_sample=(sample, features[sample]))
    before = cache.metrics
    assert before[2].l_ratio < 1e-3 < before[0].l_ratio
    cache.update(curation.merge([0, 1]))
    assert cache.metrics[3].l_ratio < before[0].l_ratio  # the merged unit is better isolated than its halves
    assert np.isnan(MetricsCache(curation, sorting, 60.0).metrics[2].l_ratio)


def test_a_cache_made_without_computing_fills_in_to_what_computing_at_once_gives():
    rng = np.random.default_rng(8)
    sorting = make_sorting(rng)
    noise = np.full(4, 0.5)
    curation = Curation(sorting.spike_units)
    at_once = MetricsCache(curation, sorting, duration_s=60.0, noise_levels=noise)
    later = MetricsCache(curation, sorting, duration_s=60.0, noise_levels=noise, compute=False)
    assert later.pending == list(range(6))
    placeholder = later.metrics[2]
    assert placeholder.n_spikes == curation.spike_count(2) and placeholder.firing_rate == curation.spike_count(2) / 60.0
    assert np.isnan(placeholder.snr) and np.isnan(placeholder.presence_ratio)

    measure = later.unit_metrics_of(later.pending)
    # A merge while the metrics are measured (in a worker): the new unit is computed at once,
    # the measured ones are handed over afterwards.
    record = curation.merge([0, 1])
    later.update(record)
    at_once.update(record)
    assert later.pending == [2, 3, 4, 5]
    later.fill(measure())
    assert later.pending == []
    assert later.metrics == at_once.metrics


def test_measuring_stops_between_units_when_asked():
    rng = np.random.default_rng(9)
    sorting = make_sorting(rng)
    cache = MetricsCache(Curation(sorting.spike_units), sorting, duration_s=60.0, compute=False)
    asked = []
    done = cache.unit_metrics_of(cache.pending)(lambda: asked.append(1) or len(asked) > 2)
    assert sorted(done) == [0, 1]
    cache.fill(done)
    assert cache.pending == [2, 3, 4, 5]

