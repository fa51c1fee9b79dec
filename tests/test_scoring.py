import numpy as np
import pytest

from engine.evaluation.scoring import compare_to_ground_truth, dictionary_error, format_report

RATE = 30000.0  # Hz; the default 0.4 ms tolerance is then 12 samples


def regular_train(n_spikes, start=1000, interval=300):
    return start + interval * np.arange(n_spikes, dtype=np.int64)


def refractory_sorting(rng, n_units, n_samples, rate_hz=20.0, refractory=60):
    """Random spike trains whose ISIs exceed the tolerance, as real neurons' do."""
    times, units = [], []
    for unit in range(n_units):
        n_intervals = int(n_samples / RATE * rate_hz * 2)
        intervals = rng.exponential(RATE / rate_hz, n_intervals).astype(np.int64) + refractory
        train = np.cumsum(intervals)
        train = train[train < n_samples]
        times.append(train)
        units.append(np.full(len(train), unit))
    times, units = np.concatenate(times), np.concatenate(units)
    order = np.argsort(times, kind="stable")
    return times[order], units[order]


def test_perfect_sort_with_other_labels_scores_one():
    gt_times = np.concatenate([regular_train(50), regular_train(40, start=1100)])
    gt_units = np.repeat([0, 1], [50, 40])
    result = compare_to_ground_truth(gt_times, gt_units, gt_times, gt_units + 7, RATE)
    np.testing.assert_array_equal(result.matched_unit, [7, 8])
    np.testing.assert_array_equal(result.accuracy, [1.0, 1.0])
    assert result.n_well_detected == 2
    assert result.mean_accuracy == 1.0


def test_jitter_counts_inside_tolerance_only():
    gt_times = regular_train(100)
    gt_units = np.zeros(100, dtype=int)
    inside = compare_to_ground_truth(gt_times, gt_units, gt_times + 12, gt_units, RATE)
    outside = compare_to_ground_truth(gt_times, gt_units, gt_times - 13, gt_units, RATE)
    assert inside.tolerance_samples == 12
    assert inside.tp[0] == 100 and inside.accuracy[0] == 1.0
    assert outside.match_counts[0, 0] == 0
    assert outside.matched_unit[0] == -1 and outside.accuracy[0] == 0.0


def test_misses_and_false_positives_give_hand_computed_scores():
    gt_times = regular_train(100)
    gt_units = np.zeros(100, dtype=int)
    detected = gt_times[20:]  # 80 hits, 20 misses
    extra = regular_train(25, start=1150)  # 25 spikes half-way between true ones
    sorted_times = np.concatenate([detected, extra])
    result = compare_to_ground_truth(gt_times, gt_units, sorted_times, np.zeros(105, dtype=int), RATE)
    assert (result.tp[0], result.fn[0], result.fp[0]) == (80, 20, 25)
    assert result.accuracy[0] == pytest.approx(80 / 125)
    assert result.precision[0] == pytest.approx(80 / 105)
    assert result.recall[0] == pytest.approx(0.8)


def test_split_unit_matches_the_larger_part_and_counts_the_other_as_redundant():
    gt_times = regular_train(100)
    gt_units = np.zeros(100, dtype=int)
    sorted_units = np.where(np.arange(100) % 10 < 7, 3, 4)  # 70 spikes in unit 3, 30 in unit 4
    result = compare_to_ground_truth(gt_times, gt_units, gt_times, sorted_units, RATE)
    np.testing.assert_allclose(result.agreement, [[0.7, 0.3]])
    assert result.matched_unit[0] == 3
    assert result.accuracy[0] == pytest.approx(0.7)
    assert result.precision[0] == 1.0
    assert result.n_well_detected == 0
    assert (result.n_redundant, result.n_false_positive_units) == (1, 0)


def test_each_spike_is_matched_at_most_once():
    gt_times = regular_train(50)
    gt_units = np.zeros(50, dtype=int)
    # Every spike detected twice, 3 samples apart: both copies lie within tolerance.
    sorted_times = np.sort(np.concatenate([gt_times, gt_times + 3]))
    result = compare_to_ground_truth(gt_times, gt_units, sorted_times, np.zeros(100, dtype=int), RATE)
    assert (result.tp[0], result.fp[0]) == (50, 50)
    assert result.precision[0] == pytest.approx(0.5)

    # Three true spikes in a burst shorter than the tolerance, one detection: one match.
    burst = compare_to_ground_truth([100, 105, 110], [0, 0, 0], [104], [0], RATE)
    assert burst.match_counts[0, 0] == 1


def test_unit_without_spikes_still_counts_as_missed():
    gt_times = regular_train(30)
    result = compare_to_ground_truth(
        gt_times, np.zeros(30, dtype=int), gt_times, np.zeros(30, dtype=int), RATE, gt_unit_ids=[0, 5]
    )
    np.testing.assert_array_equal(result.gt_unit_ids, [0, 5])
    np.testing.assert_array_equal(result.matched_unit, [0, -1])
    assert result.mean_accuracy == pytest.approx(0.5)
    with pytest.raises(ValueError, match="missing from the given unit ids"):
        compare_to_ground_truth(gt_times, np.zeros(30, dtype=int), gt_times, np.zeros(30), RATE, gt_unit_ids=[1])


def test_to_table_and_report():
    gt_times = np.concatenate([regular_train(50), regular_train(40, start=1100)])
    gt_units = np.repeat([0, 1], [50, 40])
    result = compare_to_ground_truth(gt_times, gt_units, gt_times[:50], gt_units[:50], RATE)
    table = result.to_table()
    assert [row["matched_unit"] for row in table] == [0, -1]
    assert table[0]["accuracy"] == 1.0 and isinstance(table[0]["n_gt"], int)

    errors = dictionary_error(np.eye(4)[None, :2, :].repeat(2, axis=0), np.eye(4)[None, :2, :])
    report = format_report(result, errors, title="demo")
    lines = report.splitlines()
    assert lines[0] == "demo"
    table_lines = lines[1:-1]
    assert len({len(line) for line in table_lines}) == 1  # columns aligned
    assert table_lines[0].split()[-3:] == ["recall", "dict.", "error"]
    assert table_lines[2].split()[:2] == ["1", "-"]
    assert "mean accuracy 0.500" in lines[-1] and "well detected 1/2" in lines[-1]


def test_hundred_thousand_jittered_spikes_all_match():
    """Scale as a correctness case (how fast it is lives in benchmarks/, not in a timed test)."""
    rng = np.random.default_rng(1)
    gt_times = np.sort(rng.integers(0, 3_000_000, 100_000))
    gt_units = rng.integers(0, 20, 100_000)
    sorted_times = gt_times + rng.integers(-5, 6, 100_000)
    result = compare_to_ground_truth(gt_times, gt_units, sorted_times, gt_units, RATE)
    assert result.mean_accuracy > 0.99


def test_matches_spikeinterface():
    spikeinterface_core = pytest.importorskip("spikeinterface.core")
    comparison = pytest.importorskip("spikeinterface.comparison")
    rng = np.random.default_rng(0)
    n_samples = int(20 * RATE)
    gt_times, gt_units = refractory_sorting(rng, 8, n_samples)
    # A sort with misses, jitter beyond tolerance for some spikes, a merge, a split and noise units.
    kept = rng.random(len(gt_times)) > 0.08
    sorted_times = gt_times[kept] + rng.integers(-13, 14, kept.sum())
    sorted_units = (gt_units[kept] * 3 + 11)  # other labels
    sorted_units[sorted_units == 14] = 17  # units 1 and 2 merged
    sorted_units[(sorted_units == 20) & (rng.random(len(sorted_units)) < 0.4)] = 99  # unit 3 split
    noise_times = rng.integers(0, n_samples, 800)
    sorted_times = np.concatenate([sorted_times, noise_times])
    sorted_units = np.concatenate([sorted_units, rng.integers(200, 202, 800)])
    order = np.argsort(sorted_times, kind="stable")
    sorted_times, sorted_units = sorted_times[order], sorted_units[order]

    ours = compare_to_ground_truth(gt_times, gt_units, sorted_times, sorted_units, RATE)
    theirs = comparison.compare_sorter_to_ground_truth(
        spikeinterface_core.NumpySorting.from_samples_and_labels([gt_times], [gt_units], RATE),
        spikeinterface_core.NumpySorting.from_samples_and_labels([sorted_times], [sorted_units], RATE),
        exhaustive_gt=True,
    )
    np.testing.assert_array_equal(ours.match_counts, theirs.match_event_count.to_numpy())
    np.testing.assert_allclose(ours.agreement, theirs.agreement_scores.to_numpy())
    np.testing.assert_array_equal(ours.matched_unit, theirs.hungarian_match_12.to_numpy())
    performance = theirs.get_performance()
    for name in ("accuracy", "precision", "recall"):
        np.testing.assert_allclose(getattr(ours, name), performance[name].to_numpy(dtype=float))
    assert ours.n_well_detected == theirs.count_well_detected_units(0.8)
    assert ours.n_false_positive_units == theirs.count_false_positive_units()
    assert ours.n_redundant == theirs.count_redundant_units()
    assert ours.n_overmerged == theirs.count_overmerged_units()
    # The case mix really exercises every category.
    assert ours.n_well_detected and ours.n_false_positive_units and ours.n_redundant and ours.n_overmerged
    assert -1 in ours.matched_unit


# -- dictionary error -------------------------------------------------------------


def random_shapes(rng, n, n_taps, n_channels):
    return rng.normal(size=(n, n_taps, n_channels))


def test_shifted_scaled_copy_has_zero_error():
    rng = np.random.default_rng(2)
    true = random_shapes(rng, 1, 20, 3)
    learned = np.zeros((1, 30, 3))
    learned[0, 7:27] = -2.5 * true[0]  # longer filter, shifted, scaled, sign flipped
    result = dictionary_error(true, learned)
    assert result.errors[0] == pytest.approx(0.0, abs=1e-6)
    assert result.matched_filter[0] == 0


def test_orthogonal_filters_have_error_one():
    true = np.zeros((1, 10, 2))
    true[0, :, 0] = 1.0
    learned = np.zeros((1, 10, 2))
    learned[0, :, 1] = 1.0  # other channel: orthogonal at every lag
    assert dictionary_error(true, learned).errors[0] == pytest.approx(1.0)


def test_known_overlap_gives_known_error():
    angle = 0.3
    true = np.array([[[1.0, 0.0]]])  # one tap, two channels: only lag 0 exists
    learned = np.array([[[np.cos(angle), np.sin(angle)]]])
    assert dictionary_error(true, learned).errors[0] == pytest.approx(np.sin(angle))


def test_pairing_is_recovered_and_extra_true_units_are_unmatched():
    rng = np.random.default_rng(3)
    true = random_shapes(rng, 3, 15, 4)
    learned = true[[2, 0]] + 0.01 * rng.normal(size=(2, 15, 4))
    result = dictionary_error(true, learned)
    np.testing.assert_array_equal(result.matched_filter, [1, -1, 0])
    assert result.errors[1] == 1.0
    assert result.errors[0] < 0.05 and result.errors[2] < 0.05
    assert result.error_matrix.shape == (3, 2)
