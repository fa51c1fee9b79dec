import numpy as np
import pytest

from engine.curation.model import ChangeRecord, Curation, CurationError

# 30 spikes: unit 0 owns 0..9, unit 1 owns 10..19, unit 2 owns 20..29.
INITIAL_UNITS = np.repeat([0, 1, 2], 10)


def snapshot(curation: Curation) -> tuple:
    return (
        curation.spike_clusters.tolist(),
        curation.labels,
        curation.notes,
        curation.unit_ids.tolist(),
    )


def test_merge_makes_a_new_unit_of_its_parents_spikes():
    curation = Curation(INITIAL_UNITS)
    record = curation.merge([2, 0])

    assert record == ChangeRecord(
        "merge", added=[3], deleted=[0, 2], relabelled=[], description="Merged 0 + 2 → 3"
    )
    assert curation.unit_ids.tolist() == [1, 3]
    assert curation.spike_count(3) == 20
    assert curation.spikes_of(3).tolist() == list(range(10)) + list(range(20, 30))
    assert (curation.spike_clusters[:10] == 3).all() and (curation.spike_clusters[10:20] == 1).all()


def test_split_gives_new_ids_to_both_the_split_part_and_the_rest():
    curation = Curation(INITIAL_UNITS)
    record = curation.split(np.array([3, 1, 1, 2]))

    assert record.added == [3, 4] and record.deleted == [0]
    assert curation.spikes_of(3).tolist() == [1, 2, 3]
    assert curation.spikes_of(4).tolist() == [0, 4, 5, 6, 7, 8, 9]
    assert record.description == "Split 3 spikes off 0 → 3 (rest: 0 → 4)"


def test_split_across_units_retires_every_source():
    curation = Curation(INITIAL_UNITS)
    record = curation.split(np.array([9, 10, 11]))

    assert record.deleted == [0, 1]
    assert record.added == [3, 4, 5]
    assert curation.spikes_of(3).tolist() == [9, 10, 11]
    assert curation.spike_count(4) == 9 and curation.spike_count(5) == 8
    assert curation.unit_ids.tolist() == [2, 3, 4, 5]


def test_split_of_two_whole_units_leaves_no_rest():
    curation = Curation(INITIAL_UNITS)
    record = curation.split(np.arange(20))
    assert record.added == [3] and record.deleted == [0, 1]


@pytest.mark.parametrize(
    "indices, message",
    [
        (np.array([], dtype=np.int64), "at least one spike"),
        (np.arange(10), "all of unit 0"),
        (np.array([5, 30]), r"\[0, 30\)"),
        (np.array([-1]), r"\[0, 30\)"),
        (np.array([0.5]), "spike indices"),
    ],
)
def test_split_refuses_bad_selections(indices, message):
    curation = Curation(INITIAL_UNITS)
    with pytest.raises(CurationError, match=message):
        curation.split(indices)
    assert curation.unit_ids.tolist() == [0, 1, 2] and not curation.can_undo


def test_undo_and_redo_walk_the_whole_history_exactly():
    curation = Curation(INITIAL_UNITS, {1: "good"})
    states = [snapshot(curation)]
    curation.merge([0, 1])
    states.append(snapshot(curation))
    split_off = curation.split(np.array([0, 15, 25])).added[0]
    states.append(snapshot(curation))
    curation.label([split_off], "noise")
    states.append(snapshot(curation))
    curation.set_note(split_off, "drifts")
    states.append(snapshot(curation))

    for expected in reversed(states[:-1]):
        curation.undo()
        assert snapshot(curation) == expected
    assert not curation.can_undo
    for expected in states[1:]:
        curation.redo()
        assert snapshot(curation) == expected
    assert not curation.can_redo


def test_undo_record_reverses_the_action_record():
    curation = Curation(INITIAL_UNITS)
    curation.merge([0, 1])
    undo = curation.undo()
    assert (undo.op, undo.added, undo.deleted, undo.undone) == ("merge", [0, 1], [3], True)
    assert undo.description == "Undid: Merged 0 + 1 → 3"
    redo = curation.redo()
    assert (redo.added, redo.deleted, redo.redone) == ([3], [0, 1], True)


def test_ids_are_never_reused_even_after_undo():
    curation = Curation(INITIAL_UNITS)
    curation.merge([0, 1])
    curation.undo()
    assert curation.merge([0, 1]).added == [4]
    assert curation.next_unit_id == 5


def test_a_new_action_after_undo_clears_redo():
    curation = Curation(INITIAL_UNITS)
    curation.merge([0, 1])
    curation.undo()
    curation.label(2, "mua")
    assert not curation.can_redo
    with pytest.raises(CurationError, match="nothing to redo"):
        curation.redo()


def test_undo_with_empty_history_is_refused():
    with pytest.raises(CurationError, match="nothing to undo"):
        Curation(INITIAL_UNITS).undo()


def test_new_ids_start_after_every_id_seen_and_the_reserved_ones():
    assert Curation(INITIAL_UNITS, {7: "good"}).next_unit_id == 8
    assert Curation(INITIAL_UNITS, min_new_unit_id=10).merge([0, 1]).added == [10]


def test_recluster_splits_two_blobs_deterministically():
    rng = np.random.default_rng(1)
    units = np.zeros(40, dtype=np.int64)
    units[30:] = 1
    features = np.concatenate([rng.normal(0, 0.1, (15, 2)), rng.normal(5, 0.1, (15, 2))])  # (30, 2)

    results = []
    for _ in range(2):
        curation = Curation(units)
        record = curation.recluster(0, 2, features)
        results.append([curation.spikes_of(u).tolist() for u in record.added])
    assert results[0] == results[1]
    assert sorted(results[0]) == [list(range(15)), list(range(15, 30))]
    assert record.deleted == [0] and record.added == [2, 3]


def test_recluster_checks_feature_shape_and_k():
    curation = Curation(INITIAL_UNITS)
    with pytest.raises(CurationError, match="n_unit_spikes=10"):
        curation.recluster(0, 2, np.zeros((9, 3)))
    with pytest.raises(CurationError, match="k must lie"):
        curation.recluster(0, 1, np.zeros((10, 3)))


def test_recluster_of_identical_points_is_refused():
    curation = Curation(INITIAL_UNITS)
    with pytest.warns(Warning):  # scikit-learn's ConvergenceWarning about duplicate points
        with pytest.raises(CurationError, match="one cluster"):
            curation.recluster(0, 3, np.ones((10, 2)))


def test_labels_are_validated_and_inherited_when_parents_agree():
    curation = Curation(INITIAL_UNITS, {0: "good", 1: "good", 2: "noise"})
    assert curation.label_of(curation.merge([0, 1]).added[0]) == "good"
    merged = curation.merge([2, 3]).added[0]
    assert curation.label_of(merged) == "unsorted"
    with pytest.raises(CurationError, match="unknown label 'great'"):
        curation.label(merged, "great")

    record = curation.label([merged], "mua")
    assert record.relabelled == [merged]
    assert curation.labels == {merged: "mua"}


def test_notes_are_set_cleared_and_undone():
    curation = Curation(INITIAL_UNITS)
    curation.set_note(1, "bursty")
    assert curation.notes == {1: "bursty"}
    record = curation.set_note(1, "")
    assert record.description == "Cleared the note on 1" and curation.notes == {}
    curation.undo()
    assert curation.note_of(1) == "bursty"
    with pytest.raises(CurationError, match="string"):
        curation.set_note(1, 3)


@pytest.mark.parametrize(
    "action, message",
    [
        (lambda c: c.merge([0]), "at least two"),
        (lambda c: c.merge([0, 0]), "at least two"),
        (lambda c: c.merge([0, 9]), "unit 9 does not exist"),
        (lambda c: c.label([], "good"), "no unit"),
        (lambda c: c.label(True, "good"), "integer"),
        (lambda c: c.spikes_of(5), "unit 5 does not exist"),
    ],
)
def test_invalid_actions_are_refused(action, message):
    curation = Curation(INITIAL_UNITS)
    with pytest.raises(CurationError, match=message):
        action(curation)


def test_retired_units_are_unknown():
    curation = Curation(INITIAL_UNITS)
    curation.merge([0, 1])
    with pytest.raises(CurationError, match="unit 0 does not exist"):
        curation.label(0, "good")


def test_listeners_hear_every_change_until_unsubscribed():
    curation = Curation(INITIAL_UNITS)
    heard = []
    unsubscribe = curation.on_change(heard.append)
    curation.merge([0, 1])
    curation.undo()
    curation.redo()
    curation.label(2, "good")
    unsubscribe()
    curation.set_note(2, "x")
    assert [(r.op, r.undone, r.redone) for r in heard] == [
        ("merge", False, False),
        ("merge", True, False),
        ("merge", False, True),
        ("label", False, False),
    ]


def test_the_spike_index_stays_consistent_through_random_actions():
    rng = np.random.default_rng(7)
    curation = Curation(rng.integers(0, 12, 3000))
    for _ in range(60):
        units = curation.unit_ids
        choice = rng.integers(4)
        if choice == 0 and len(units) > 2:
            curation.merge(rng.choice(units, 2, replace=False))
        elif choice == 1:
            spikes = curation.spikes_of(int(rng.choice(units)))
            if len(spikes) > 1:
                curation.split(rng.choice(spikes, len(spikes) // 2, replace=False))
        elif choice == 2 and curation.can_undo:
            curation.undo()
        elif curation.can_redo:
            curation.redo()

    spike_clusters = curation.spike_clusters
    assert curation.unit_ids.tolist() == np.unique(spike_clusters).tolist()
    for unit in curation.unit_ids:
        assert np.array_equal(curation.spikes_of(unit), np.flatnonzero(spike_clusters == unit))
    first_three = curation.unit_ids[:3]
    expected = np.flatnonzero(np.isin(spike_clusters, first_three))
    assert np.array_equal(curation.spikes_of(first_three), expected)


def test_returned_arrays_cannot_corrupt_the_model():
    curation = Curation(INITIAL_UNITS)
    with pytest.raises(ValueError):
        curation.spike_clusters[0] = 2
    with pytest.raises(ValueError):
        curation.spikes_of(0)[0] = 25


def test_save_phy_writes_the_three_files(tmp_path):
    np.save(tmp_path / "spike_times.npy", np.arange(30, dtype=np.int64))  # an exported phy folder
    curation = Curation(INITIAL_UNITS, {2: "good"})
    curation.merge([0, 1])
    curation.set_note(2, "clean\tunit\nnice")
    curation.save_phy(tmp_path, extra_columns={"fr": {2: 1.5, 3: 2.25}, "snr": {3: 7.0}})

    spike_clusters = np.load(tmp_path / "spike_clusters.npy")
    assert spike_clusters.dtype == np.int32 and spike_clusters.tolist() == [3] * 20 + [2] * 10
    assert (tmp_path / "cluster_group.tsv").read_text() == "cluster_id\tgroup\n2\tgood\n3\tunsorted\n"
    assert (tmp_path / "cluster_info.tsv").read_text().splitlines() == [
        "cluster_id\tn_spikes\tfr\tsnr\tgroup\tnote",
        "2\t10\t1.5\t\tgood\tclean unit nice",
        "3\t20\t2.25\t7.0\tunsorted\t",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cluster_group.tsv",
        "cluster_info.tsv",
        "spike_clusters.npy",
        "spike_times.npy",
    ]


def test_save_phy_refuses_a_folder_of_other_spikes(tmp_path):
    np.save(tmp_path / "spike_times.npy", np.arange(29, dtype=np.int64))
    with pytest.raises(ValueError, match="30 spike clusters for 29 spikes"):
        Curation(INITIAL_UNITS).save_phy(tmp_path)


def test_save_phy_refuses_to_shadow_built_in_columns(tmp_path):
    with pytest.raises(CurationError, match="n_spikes"):
        Curation(INITIAL_UNITS).save_phy(tmp_path, extra_columns={"n_spikes": {}})


def test_spikes_grouped_by_unit_as_a_stable_argsort_groups_them():
    from engine.curation.grouping import group_by_unit, order_by_unit

    rng = np.random.default_rng(3)
    for units in (rng.integers(0, 500, 5_000), rng.integers(0, 200_000, 5_000), rng.integers(0, 3, 7).astype(np.int32)):
        np.testing.assert_array_equal(order_by_unit(units), np.argsort(units, kind="stable"))
        order, ids, bounds = group_by_unit(units)
        np.testing.assert_array_equal(ids, np.unique(units))
        for unit, first, stop in zip(ids, bounds[:-1], bounds[1:]):
            np.testing.assert_array_equal(order[first:stop], np.flatnonzero(units == unit))
    order, ids, bounds = group_by_unit(np.zeros(0, dtype=np.int64))
    assert len(order) == len(ids) == 0 and bounds.tolist() == [0]
