"""Curating in the window: phy's keys, lassos, the journal on disk, reopening, and sorts without raw data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PyQt6.QtCore import Qt

from app.main_window import MainWindow
from engine.curation.model import Curation
from engine.io.phy import export_phy, load_phy
from engine.io.recording import open_recording
from engine.evaluation.simulator import GroundTruth
from engine.pipeline.sorting import Sorting

OVER_SPLIT_UNIT = 1  # the tiny recording's unit 1 is exported as units 1 and 2: something to merge


@pytest.fixture
def shown_errors(monkeypatch):
    errors = []
    monkeypatch.setattr("app.main_window.show_error", lambda _parent, error: errors.append(error))
    return errors


def tiny_sorting(tiny_recording) -> Sorting:
    """The tiny recording's ground truth, with unit 1 cut in two at half time (units 1 and 2)."""
    truth = GroundTruth.load(tiny_recording.parent / "ground_truth").to_sorting()
    units = truth.spike_units.copy()
    halfway = truth.spike_times >= truth.spike_times[-1] // 2
    units[(units == OVER_SPLIT_UNIT) & halfway] = 2
    templates = np.concatenate([truth.templates, truth.templates[OVER_SPLIT_UNIT : OVER_SPLIT_UNIT + 1]])
    return Sorting(truth.spike_times, units, truth.amplitudes, templates, truth.sampling_rate)


@pytest.fixture
def phy_folder(tmp_path, tiny_recording):
    return export_phy(tiny_sorting(tiny_recording), tmp_path / "sort", recording=open_recording(tiny_recording))


def open_for_curation(qtbot, folder) -> MainWindow:
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    window.activateWindow()
    qtbot.waitExposed(window)
    with qtbot.waitSignal(window.opened, timeout=20_000):
        window.open_path(folder)
    qtbot.waitUntil(lambda: window.session.curation is not None, timeout=20_000)
    # The unit metrics follow in the background (the table shows spike counts meanwhile).
    qtbot.waitUntil(lambda: not window.curation_controller.metrics.pending, timeout=20_000)
    return window


@pytest.fixture
def curating(qtbot, phy_folder, shown_errors):
    window = open_for_curation(qtbot, phy_folder)
    yield window
    window.close()
    assert not shown_errors


def press(qtbot, window, key, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    qtbot.keyClick(window, key, modifier)


def current_units(window) -> list[int]:
    return window.session.unit_table.unit_ids.tolist()


def choose_save_folder(qtbot, window, folder) -> None:
    """Answer the open "save into a folder" dialog with `folder` (typed, as a person would)."""
    from PyQt6 import sip
    from PyQt6.QtWidgets import QFileDialog, QLineEdit

    dialog = window.findChild(QFileDialog, "save_folder_dialog")
    assert dialog is not None and dialog.isVisible()
    dialog.setDirectory(str(Path(folder).parent))
    name_edit = dialog.findChild(QLineEdit, "fileNameEdit")
    name_edit.setText(Path(folder).name)
    qtbot.keyClick(name_edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: sip.isdeleted(dialog) or not dialog.isVisible(), timeout=5_000)
    # A window manager gives the focus back to the window when its dialog closes; offscreen, we do.
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5_000)


def lasso_around_time(window, view_name: str, start_s: float, stop_s: float) -> None:
    """Draw (programmatically) a lasso in the Amplitudes view around every spike between two times."""
    view = window.views[view_name]
    view.refresh()
    top = float(window.session.sorting.amplitudes.max()) * 2
    view.lasso.set_polygon([(start_s, -1.0), (stop_s, -1.0), (stop_s, top), (start_s, top)])


def test_merge_label_split_undo_redo_by_keys_match_the_journal(curating, qtbot, phy_folder):
    window, session = curating, curating.session
    spikes_before = {u: session.curation.spike_count(u) for u in (1, 2)}

    session.select_units([1, 2])
    press(qtbot, window, Qt.Key.Key_G)
    assert current_units(window) == [0, 3]
    assert session.selected_units == (3,)
    assert window.status_label.text() == "Merged 1 + 2 → 3"
    row = current_units(window).index(3)
    assert session.unit_table.n_spikes[row] == sum(spikes_before.values())

    press(qtbot, window, Qt.Key.Key_G, Qt.KeyboardModifier.AltModifier)
    assert session.unit_table.labels[current_units(window).index(3)] == "good"

    sorting = session.sorting
    duration_s = sorting.spike_times[-1] / sorting.sampling_rate
    lasso_around_time(window, "amplitudes", 0.0, duration_s / 4)
    spikes_of_3 = session.curation.spikes_of(3)
    early = spikes_of_3[sorting.spike_times[spikes_of_3] / sorting.sampling_rate < duration_s / 4]
    np.testing.assert_array_equal(session.selected_spikes.spikes, early)
    press(qtbot, window, Qt.Key.Key_K)
    assert current_units(window) == [0, 4, 5]
    np.testing.assert_array_equal(session.curation.spikes_of(4), early)
    assert session.selected_spikes is None, "a lasso does not outlive the split"
    assert session.unit_table.labels[current_units(window).index(5)] == "good", "the rest keeps the label"

    press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert current_units(window) == [0, 3]
    assert window.status_label.text().startswith("Undid: Split")
    press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert current_units(window) == [0, 4, 5]

    # Every action reached the journal as it happened: replaying it gives the same curation
    # (read-only: the window holds the folder's lock).
    replayed = Curation.open(
        phy_folder, load_phy(phy_folder).spike_clusters, min_new_unit_id=sorting.n_units, read_only_reason="test"
    )
    np.testing.assert_array_equal(replayed.spike_clusters, session.curation.spike_clusters)
    assert replayed.labels == session.curation.labels
    assert replayed.undo_descriptions == session.curation.undo_descriptions
    replayed.close()


def test_impossible_actions_are_refused_in_the_status_bar(curating, qtbot):
    window, session = curating, curating.session
    session.select_units([0])
    press(qtbot, window, Qt.Key.Key_G)
    assert "two or more units" in window.status_label.text()
    press(qtbot, window, Qt.Key.Key_K)
    assert "lasso" in window.status_label.text()
    press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert window.status_label.text() == "Nothing to undo"
    assert current_units(window) == [0, 1, 2]


def test_space_steps_through_the_units_in_table_order(curating, qtbot):
    window, session = curating, curating.session
    units_view = window.views["units"]
    units_view.table_view.sortByColumn(0, Qt.SortOrder.DescendingOrder)
    session.select_units([])
    press(qtbot, window, Qt.Key.Key_Space)
    assert session.selected_units == (2,)
    press(qtbot, window, Qt.Key.Key_Space)
    assert session.selected_units == (1,)
    press(qtbot, window, Qt.Key.Key_Space, Qt.KeyboardModifier.ShiftModifier)
    assert session.selected_units == (2,)


def test_saving_then_reopening_restores_the_curation_and_its_history(curating, qtbot, phy_folder):
    window, session = curating, curating.session
    session.select_units([1, 2])
    press(qtbot, window, Qt.Key.Key_G)
    press(qtbot, window, Qt.Key.Key_N, Qt.KeyboardModifier.AltModifier)
    press(qtbot, window, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.status_label.text().startswith("Saved 2 units"), timeout=10_000)
    curated = np.array(session.curation.spike_clusters)

    # What phy reads: the clusters and labels on disk are the curation's.
    saved = load_phy(phy_folder)
    np.testing.assert_array_equal(saved.spike_clusters, curated)
    assert saved.cluster_groups == {0: "unsorted", 3: "noise"}
    assert "fr" in (phy_folder / "cluster_info.tsv").read_text().splitlines()[0]
    from phylib.io.model import load_model

    model = load_model(phy_folder / "params.py")
    try:
        np.testing.assert_array_equal(model.spike_clusters, curated)
        assert model.metadata["group"][3] == "noise"
    finally:
        model.close()
    window.close()

    reopened = open_for_curation(qtbot, phy_folder)
    np.testing.assert_array_equal(reopened.session.curation.spike_clusters, curated)
    assert reopened.session.unit_table.labels == ["", "noise"]
    # The history came back too: the merge can still be undone after reopening.
    press(qtbot, reopened, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    press(qtbot, reopened, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert current_units(reopened) == [0, 1, 2]
    reopened.close()


def test_a_kilosort_folder_keeps_its_cluster_ids_and_labels(qtbot, phy_folder, shown_errors):
    # As Kilosort leaves them: ids with gaps, (n, 1) arrays, and labels phy does not know.
    spike_clusters = np.load(phy_folder / "spike_clusters.npy")
    np.save(phy_folder / "spike_clusters.npy", np.array([0, 5, 17])[spike_clusters].reshape(-1, 1).astype(np.int32))
    (phy_folder / "cluster_group.tsv").write_text("cluster_id\tgroup\n5\tgood\n17\tmaybe later\n")
    window = open_for_curation(qtbot, phy_folder)
    session = window.session
    assert current_units(window) == [0, 5, 17]
    assert session.unit_table.labels == ["", "good", ""]

    session.select_units([5, 17])
    press(qtbot, window, Qt.Key.Key_G)
    assert window.status_label.text() == "Merged 5 + 17 → 18"
    press(qtbot, window, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.status_label.text().startswith("Saved"), timeout=10_000)
    assert set(np.unique(load_phy(phy_folder).spike_clusters)) == {0, 18}
    window.close()
    assert not shown_errors


def test_a_fresh_sort_is_curated_in_memory_until_saved_then_its_history_moves_into_the_session(
    window, qtbot, tmp_path, tiny_recording, monkeypatch, shown_errors
):
    from app.unit_table import build_unit_table

    session = window.session
    sorting = tiny_sorting(tiny_recording)  # as training would leave it: no folder behind it
    session.set_sorting(sorting, build_unit_table(sorting, session.recording))
    qtbot.waitUntil(lambda: session.curation is not None, timeout=20_000)
    session.select_units([1, 2])
    press(qtbot, window, Qt.Key.Key_G)

    folder = tmp_path / "session"
    press(qtbot, window, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    choose_save_folder(qtbot, window, folder)
    qtbot.waitUntil(lambda: window.status_label.text().startswith("Saved 2 units"), timeout=20_000)
    assert (folder / "curation.jsonl").exists(), "the journal lives in the session folder from now on"
    np.testing.assert_array_equal(load_phy(folder / "sorting").spike_clusters, session.curation.spike_clusters)
    press(qtbot, window, Qt.Key.Key_N, Qt.KeyboardModifier.AltModifier)  # journaled there at once
    window.close()

    reopened = open_for_curation(qtbot, folder)
    assert current_units(reopened) == [0, 3]
    assert reopened.session.unit_table.labels == ["", "noise"]
    assert reopened.session.curation.undo_descriptions == ["Merged 1 + 2 → 3", "Labelled 3 as noise"]
    reopened.close()
    assert not shown_errors


def test_a_fresh_sorts_noise_labels_show_in_the_table_and_a_person_can_change_and_undo_them(
    window, qtbot, tiny_recording, shown_errors
):
    """The sort labels its residual units noise (engine/pipeline/residual_units.py): the person sees it and decides."""
    from dataclasses import replace

    from app.unit_table import build_unit_table

    session = window.session
    sorting = replace(tiny_sorting(tiny_recording), unit_groups={2: "noise"}, sort_labels={2: "noise"})
    session.set_sorting(sorting, build_unit_table(sorting, session.recording))
    qtbot.waitUntil(lambda: session.curation is not None, timeout=20_000)
    assert session.unit_table.labels == ["", "", "noise"]

    session.select_units([2])
    press(qtbot, window, Qt.Key.Key_G, Qt.KeyboardModifier.AltModifier)
    qtbot.waitUntil(lambda: session.unit_table.labels == ["", "", "good"], timeout=5_000)
    press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: session.unit_table.labels == ["", "", "noise"], timeout=5_000)
    assert not shown_errors


def test_a_lasso_on_the_tsne_map_splits_its_spikes(curating, qtbot):
    window, session = curating, curating.session
    window.docks["embedding"].raise_()  # curating, a tab behind the Probe
    view = window.views["embedding"]
    qtbot.waitUntil(lambda: view.embedding is not None and view.embedding.tsne_fraction >= 1.0, timeout=30_000)
    view.refresh()
    session.select_units([0])
    rows = view.unit_rows[0]
    points = view.embedding.layout[rows]
    # Everything of unit 0 left of its median x.
    middle = float(np.median(points[:, 0]))
    low, high = points.min(axis=0) - 1, points.max(axis=0) + 1
    view.lasso.set_polygon([(low[0], low[1]), (middle, low[1]), (middle, high[1]), (low[0], high[1])])
    expected = np.sort(view.embedding.spike_indices[rows[points[:, 0] < middle]])
    np.testing.assert_array_equal(session.selected_spikes.spikes, expected)

    press(qtbot, window, Qt.Key.Key_K)
    assert current_units(window) == [1, 2, 3, 4]
    np.testing.assert_array_equal(session.curation.spikes_of(3), expected)


def test_a_lasso_on_a_sampled_map_also_takes_the_spikes_it_did_not_show(qtbot, phy_folder, monkeypatch, shown_errors):
    monkeypatch.setattr("app.views.embedding.MAX_EMBEDDED_SPIKES", 60)
    window = open_for_curation(qtbot, phy_folder)
    session, view = window.session, window.views["embedding"]
    window.docks["embedding"].raise_()  # curating, a tab behind the Probe
    qtbot.waitUntil(lambda: view.embedding is not None and view.embedding.tsne_fraction >= 1.0, timeout=30_000)
    view.refresh()
    assert len(view.embedding.spike_indices) == 60 < session.sorting.n_spikes
    session.select_units([0])
    points = view.embedding.layout[view.unit_rows[0]]
    low, high = points.min(axis=0) - 1, points.max(axis=0) + 1
    middle = float(np.median(points[:, 0]))
    view.lasso.set_polygon([(low[0], low[1]), (middle, low[1]), (middle, high[1]), (low[0], high[1])])
    shown_inside = session.selected_spikes.spikes

    press(qtbot, window, Qt.Key.Key_K)
    qtbot.waitUntil(lambda: current_units(window) == [1, 2, 3, 4], timeout=20_000)
    split_off = session.curation.spikes_of(3)
    assert np.isin(shown_inside, split_off).all()
    assert len(split_off) > len(shown_inside), "unsampled spikes of unit 0 follow their nearest sampled neighbour"
    window.close()
    assert not shown_errors


def test_recluster_asks_for_k_and_splits_the_unit(curating, qtbot):
    from PyQt6.QtWidgets import QInputDialog

    window, session = curating, curating.session
    session.select_units([0])
    window.curation_controller.recluster_action.trigger()
    dialog = window.findChild(QInputDialog, "recluster_dialog")
    dialog.setIntValue(2)
    dialog.accept()
    qtbot.waitUntil(lambda: current_units(window) == [1, 2, 3, 4], timeout=30_000)
    assert window.status_label.text().startswith("Reclustered 0 into 2")
    assert session.selected_units == (3, 4)


def test_a_sort_without_raw_data_curates_and_says_what_it_cannot_show(qtbot, tmp_path, tiny_recording, shown_errors):
    folder = export_phy(tiny_sorting(tiny_recording), tmp_path / "sort_without_data")
    window = open_for_curation(qtbot, folder)
    session = window.session
    assert session.recording is None
    session.select_units([1, 2])
    qtbot.waitUntil(lambda: window.views["correlograms"].shown_units == [1, 2], timeout=10_000)

    for name in ("waveforms", "embedding"):
        view = window.views[name]
        view.refresh()
        assert view.message.isVisible(), name
        assert "No raw data" in view.message.text(), name
    for name in ("amplitudes", "isi", "correlograms"):
        assert not window.views[name].message.isVisible(), name

    press(qtbot, window, Qt.Key.Key_G)
    assert current_units(window) == [0, 3]
    window.curation_controller.recluster_action.trigger()
    assert "raw data" in window.status_label.text()
    window.close()
    assert not shown_errors


def test_opening_a_sort_for_curation_imports_no_torch(phy_folder, tmp_path):
    """Torch takes 1.5-3 s to import and only training needs it: the Training form loads it when asked."""
    import subprocess
    import sys

    probe = (
        "import os, sys, time\n"
        "os.environ['QT_QPA_PLATFORM'] = 'offscreen'\n"
        "from PyQt6.QtCore import QSettings\n"
        "from PyQt6.QtWidgets import QApplication\n"
        "QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, sys.argv[2])\n"
        "app = QApplication([])\n"
        "from app.main_window import MainWindow\n"
        "window = MainWindow(); window.show(); window.open_path(sys.argv[1])\n"
        "deadline = time.monotonic() + 60\n"
        "while window.session.curation is None and time.monotonic() < deadline:\n"
        "    app.processEvents(); time.sleep(0.01)\n"
        "print('curating', window.session.curation is not None, 'torch', 'torch' in sys.modules)\n"
        "window.views['training'].config()\n"
        "print('training form', 'torch' in sys.modules, window.views['training'].fields['n_iterations'].text() != '')\n"
        "window.close()\n"
    )
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", probe, str(phy_folder), str(tmp_path)], cwd=repo,
                            capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stdout.splitlines() if line.startswith(("curating", "training"))]
    assert lines == ["curating True torch False", "training form True True"], result.stderr[-2000:]


def test_units_whose_metrics_are_pending_have_no_suggested_label_yet(tiny_recording):
    from app.curation_controller import METRICS_PENDING, curated_unit_table, unit_shapes
    from engine.curation.labels import suggest_labels
    from engine.curation.metrics import MetricsCache

    sorting = tiny_sorting(tiny_recording)
    curation = Curation(sorting.spike_units)
    metrics = MetricsCache(curation, sorting, 2.0, compute=False)
    metrics.fill(metrics.unit_metrics_of([0])())
    shapes = unit_shapes(sorting, {u: curation.spikes_of(u) for u in curation.unit_ids.tolist()})
    suggested = suggest_labels({u: m for u, m in metrics.metrics.items() if u not in metrics.pending})
    table = curated_unit_table(curation, metrics.metrics, shapes, suggested)
    assert table.suggested_labels[0] != "" and table.suggested_labels[1:] == [""] * (len(table.unit_ids) - 1)
    assert table.suggested_reasons[1] == METRICS_PENDING
    assert np.isnan(table.snr[1]) and table.n_spikes[1] == curation.spike_count(1)
