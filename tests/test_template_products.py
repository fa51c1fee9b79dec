"""The matrix products that replaced einsum/tensordot on the opening path give the same numbers."""

from __future__ import annotations

import numpy as np

from engine.pipeline.sorting import template_mix
from engine.curation.metrics import MetricsCache, l_ratios
from engine.curation.model import Curation
from engine.io.phy import _mix_templates, load_phy
from tests.test_phy_io import write_params


def test_template_mix_is_the_weighted_sum_of_templates():
    rng = np.random.default_rng(0)
    templates = rng.standard_normal((3, 7, 5)).astype(np.float32)
    weights = np.array([0.2, 0.5, 0.3])
    np.testing.assert_allclose(template_mix(weights, templates), np.tensordot(weights, templates, axes=1), rtol=1e-5)
    np.testing.assert_allclose(template_mix(np.ones(1), templates[:1]), templates[0])
    assert template_mix(weights, templates).shape == (7, 5)


def test_units_of_several_templates_are_mixed_and_the_others_copied():
    rng = np.random.default_rng(1)
    templates = rng.standard_normal((4, 6, 3)).astype(np.float32)
    counts = np.array([[5, 0, 0, 0], [0, 0, 2, 6], [0, 0, 0, 0]])  # one template, two, none
    mixed = _mix_templates(counts, templates)
    weights = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    np.testing.assert_allclose(mixed, np.einsum("ut,tsc->usc", weights, templates), rtol=1e-5, atol=1e-6)
    assert mixed.dtype == np.float32


def _kilosort_folder(folder, unwhitening):
    write_params(folder, dat_path="/nowhere/data.bin", n_channels_dat=3, offset=0, sample_rate=25000.0)
    np.save(folder / "spike_times.npy", np.array([10, 20, 30], dtype=np.uint64))
    np.save(folder / "spike_templates.npy", np.array([1, 0, 1], dtype=np.uint32))
    templates = np.random.default_rng(2).standard_normal((2, 5, 3)).astype(np.float32)
    np.save(folder / "templates.npy", templates)
    np.save(folder / "whitening_mat_inv.npy", unwhitening)
    return templates


def test_templates_are_unwhitened_by_a_full_or_a_diagonal_matrix(tmp_path):
    for name, unwhitening in (("full", np.random.default_rng(3).standard_normal((3, 3))), ("diagonal", np.diag([2.0, 3.0, 0.5]))):
        folder = tmp_path / name
        templates = _kilosort_folder(folder, unwhitening)
        np.testing.assert_allclose(load_phy(folder).templates, templates @ unwhitening.astype(np.float32), rtol=1e-5, atol=1e-6)


def test_l_ratios_measured_in_a_worker_are_kept_and_only_the_missing_ones_measured():
    rng = np.random.default_rng(4)
    n = 400
    spike_units = np.repeat([0, 1, 2, 3], n // 4)
    features = rng.standard_normal((n, 3)) + spike_units[:, None]

    class _Sorting:
        n_spikes = n
        spike_times = np.arange(n) * 30
        spike_units = np.repeat([0, 1, 2, 3], n // 4)
        sampling_rate = 30000.0
        amplitudes = np.ones(n)
        templates = np.ones((4, 5, 2), dtype=np.float32)

    curation = Curation(spike_units.astype(np.int64))
    cache = MetricsCache(curation, _Sorting(), duration_s=1.0)
    sample = (np.arange(n), features)
    expected = l_ratios(features, spike_units, [0, 1, 2, 3])
    cache.set_feature_sample(sample, {0: 123.0, 1: expected[1]})
    measured = {unit: metrics.l_ratio for unit, metrics in cache.metrics.items()}
    assert measured[0] == 123.0, "a ratio given is kept, not measured again"
    np.testing.assert_allclose([measured[1], measured[2], measured[3]], [expected[1], expected[2], expected[3]])
