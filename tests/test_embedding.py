"""Per-spike features, the t-SNE map, lasso geometry, and where a folder's curation journal lives."""

from __future__ import annotations

import numpy as np
import pytest

from app.lasso import points_inside
from engine.curation import features as features_module
from engine.curation.model import Curation
from engine.curation.folder import START_UNITS_FILE, open_curation
from engine.curation.embedding import Cancelled, embed_spikes, extend_selection, stratified_subsample, tsne_layout
from engine.curation.features import SpikeFeatureExtractor, read_snippets
from engine.io.phy import export_phy, load_phy
from engine.pipeline.preprocessing import PreprocessedRecording
from engine.io.recording import open_recording
from engine.evaluation.simulator import GroundTruth


@pytest.fixture(scope="module")
def tiny(tiny_recording):
    """(preprocessed recording, ground-truth sorting) of the tiny simulation."""
    sorting = GroundTruth.load(tiny_recording.parent / "ground_truth").to_sorting()
    return PreprocessedRecording(open_recording(tiny_recording)), sorting


def test_stratified_subsample_keeps_small_units_whole_and_thins_big_ones():
    spike_units = np.repeat([0, 1, 2, 3], [5, 40, 1000, 3000])
    chosen = stratified_subsample(spike_units, max_spikes=500)
    counts = np.bincount(spike_units[chosen], minlength=4)
    assert len(chosen) <= 500 and np.all(np.diff(chosen) > 0)
    assert counts[0] == 5 and counts[1] == 40, "units below the quota are taken whole"
    assert counts[2] == counts[3] >= 220, "the rest share the budget equally"
    assert np.array_equal(stratified_subsample(spike_units, max_spikes=10_000), np.arange(len(spike_units)))


def test_snippets_are_the_same_whatever_the_reads_are_grouped_into(tiny):
    recording, sorting = tiny
    rng = np.random.default_rng(0)
    # Spikes in any order, two at the very edges of the recording.
    times = np.concatenate([rng.integers(0, recording.n_samples, 30), [2, recording.n_samples - 3]])
    channels = rng.integers(0, recording.n_channels, (len(times), 2))
    before, after = 8, 12
    one_read_each = read_snippets(recording, times, channels, before, after, chunk_values=1)
    few_reads = read_snippets(recording, times, channels, before, after)
    np.testing.assert_allclose(one_read_each, few_reads, atol=1e-4)

    traces = recording.get_traces()
    padded = np.pad(traces, ((before, after), (0, 0)))
    expected = np.stack([padded[t : t + before + after][:, c] for t, c in zip(times, channels)])
    np.testing.assert_allclose(few_reads, expected, atol=1e-3)


def test_features_separate_the_units_and_transform_matches_fit(tiny, monkeypatch):
    recording, sorting = tiny
    spikes = np.arange(sorting.n_spikes)
    extractor = SpikeFeatureExtractor(n_components=4)
    features = extractor.fit_transform(recording, sorting, spikes)
    assert features.shape == (sorting.n_spikes, 4)
    # Each spike is nearer its own unit's centre than any other's.
    centres = np.stack([features[sorting.spike_units == u].mean(axis=0) for u in range(sorting.n_units)])
    nearest = np.linalg.norm(features[:, None] - centres[None], axis=2).argmin(axis=1)
    assert np.mean(nearest == sorting.spike_units) > 0.95

    # In batches, and for spikes given in another order, the same features come out.
    monkeypatch.setattr(features_module, "TRANSFORM_BATCH", 7)
    shuffled = np.random.default_rng(1).permutation(spikes)
    np.testing.assert_allclose(extractor.transform(recording, sorting, shuffled), features[shuffled], atol=1e-3)
    refitted = SpikeFeatureExtractor(n_components=4).fit(recording, sorting, spikes)
    np.testing.assert_allclose(refitted.transform(recording, sorting, spikes), features, atol=1e-3)


def test_the_map_shows_the_pca_first_then_settles_and_can_be_stopped(tiny):
    recording, sorting = tiny
    layouts = []
    embedding = embed_spikes(recording, sorting, on_layout=layouts.append)
    assert layouts[0].tsne_fraction == 0.0
    np.testing.assert_array_equal(layouts[0].layout, layouts[0].features[:, :2])
    fractions = [layout.tsne_fraction for layout in layouts]
    assert len(fractions) > 10 and fractions == sorted(fractions)
    assert embedding.tsne_fraction == 1.0 and embedding.layout.shape == (sorting.n_spikes, 2)

    updates = []
    with pytest.raises(Cancelled):
        tsne_layout(
            embedding.features, on_update=lambda *update: updates.append(update), should_stop=lambda: len(updates) >= 2
        )
    assert len(updates) == 2


def test_a_lasso_on_a_sample_extends_to_the_unsampled_spikes_by_nearest_neighbour(tiny):
    recording, sorting = tiny
    embedding = embed_spikes(recording, sorting, max_spikes=60)
    sampled = embedding.spike_indices
    assert len(sampled) == 60
    unit_spikes = {0: np.flatnonzero(sorting.spike_units == 0)}
    # The "lasso": sampled spikes of unit 0 with a low first feature.
    rows = np.flatnonzero(sorting.spike_units[sampled] == 0)
    inside = np.zeros(len(sampled), dtype=bool)
    inside[rows[embedding.features[rows, 0] < np.median(embedding.features[rows, 0])]] = True

    selected = extend_selection(embedding, inside, unit_spikes, recording, sorting)

    everything = embedding.extractor.transform(recording, sorting, unit_spikes[0])
    distances = np.linalg.norm(everything[:, None] - embedding.features[rows][None], axis=2)
    expected = unit_spikes[0][inside[rows[distances.argmin(axis=1)]]]
    np.testing.assert_array_equal(selected, expected)
    assert np.isin(sampled[inside], selected).all() and len(selected) > inside.sum()


def test_points_inside_a_concave_polygon():
    # A "U": the notch between its arms is outside.
    polygon = np.array([(0, 0), (3, 0), (3, 3), (2, 3), (2, 1), (1, 1), (1, 3), (0, 3)], dtype=float)
    points = np.array([(0.5, 2.0), (1.5, 2.0), (2.5, 2.0), (1.5, 0.5), (4.0, 1.0)])
    assert points_inside(polygon, points).tolist() == [True, False, True, True, False]


def test_a_saved_curation_replays_from_where_it_started(tmp_path, tiny):
    recording, sorting = tiny
    folder = export_phy(sorting, tmp_path / "sort")
    curation, note = open_curation(folder, load_phy(folder).spike_clusters, min_new_unit_id=sorting.n_units)
    assert note == ""
    curation.merge([0, 1])
    curation.save_phy(folder)  # spike_clusters.npy is now the merged units
    curation.close()

    reopened, _ = open_curation(folder, load_phy(folder).spike_clusters, min_new_unit_id=sorting.n_units)
    np.testing.assert_array_equal(reopened.spike_clusters, np.full(sorting.n_spikes, 2))
    reopened.undo()
    np.testing.assert_array_equal(reopened.spike_clusters, sorting.spike_units)
    reopened.close()


def test_a_journal_of_another_sort_is_set_aside_not_replayed(tmp_path, tiny):
    _, sorting = tiny
    folder = export_phy(sorting, tmp_path / "sort")
    with Curation.open(folder, np.zeros(5, dtype=np.int64)) as other:
        other.label([0], "good")
    np.save(folder / START_UNITS_FILE, np.zeros(5, dtype=np.int64))

    curation, note = open_curation(folder, sorting.spike_units)
    assert "moved to curation-set-aside-" in note
    assert not curation.can_undo and curation.n_spikes == sorting.n_spikes
    aside = next(folder.glob("curation-set-aside-*"))
    assert (aside / "curation.jsonl").exists()
    curation.close()
