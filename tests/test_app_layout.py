"""Layout: the Units table's Label column in view, the training curves' labels clear of each other, no jumps."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PyQt6.QtCore import Qt

from engine.evaluation.simulator import GroundTruth
from engine.io.phy import export_phy
from engine.io.recording import open_recording
from engine.pipeline.sorting import Sorting
from tests.test_curation_gui import open_for_curation


def save_shot(widget, name):
    folder = os.environ.get("SPARSORT_TEST_SHOTS")
    if folder:
        widget.grab().save(os.path.join(folder, name))


@pytest.fixture
def four_unit_folder(tmp_path, tiny_recording):
    """The tiny recording's two units, each cut in two at half time: four rows."""
    truth = GroundTruth.load(tiny_recording.parent / "ground_truth").to_sorting()
    late = truth.spike_times >= truth.spike_times[-1] // 2
    units = truth.spike_units + 2 * late
    templates = np.concatenate([truth.templates, truth.templates])
    sorting = Sorting(truth.spike_times, units, truth.amplitudes, templates, truth.sampling_rate)
    return export_phy(sorting, tmp_path / "sort", recording=open_recording(tiny_recording))


def test_the_units_table_shows_the_labels_of_four_units_without_scrolling(qtbot, four_unit_folder):
    window = open_for_curation(qtbot, four_unit_folder)
    table = window.views["units"].table_view
    qtbot.waitUntil(lambda: window.views["units"].proxy.rowCount() == 4, timeout=5_000)
    window.resize(1600, 1000)  # as --screenshot and the README picture have it
    window.reset_layout()
    qtbot.wait(100)
    headers = [window.views["units"].model.headerData(c, Qt.Orientation.Horizontal) for c in range(window.views["units"].model.columnCount())]
    label = headers.index("Label")
    assert label == 1, "Label follows Unit"
    viewport = table.viewport().rect()
    # The curator's columns (Label, and the suggested label beside it) are in view; the
    # metric columns after them may scroll sideways (more are offered in the header's menu).
    for column in (label, headers.index("Sugg.")):
        assert table.columnViewportPosition(column) + table.columnWidth(column) <= viewport.width() + 1
    assert table.verticalScrollBar().maximum() == 0, "4 rows do not fit"
    save_shot(window.views["units"], "units_table.png")
    window.close()


def test_the_cluster_info_amplitude_is_the_tables(qtbot, four_unit_folder):
    from PyQt6.QtCore import Qt

    window = open_for_curation(qtbot, four_unit_folder)
    qtbot.keyClick(window, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.status_label.text().startswith("Saved 4 units"), timeout=10_000)
    lines = (four_unit_folder / "cluster_info.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    assert "amp" not in header and "ptp_uv" in header
    written = {int(row.split("\t")[0]): float(row.split("\t")[header.index("ptp_uv")]) for row in lines[1:]}
    table = window.session.unit_table
    shown = dict(zip(table.unit_ids.tolist(), table.peak_amplitude.tolist()))
    assert written == pytest.approx(shown, rel=1e-6)
    window.close()


def test_the_training_curves_labels_fit_beside_their_plots(window, qtbot):
    view = window.views["training"]
    window.resize(1500, 920)
    qtbot.wait(50)
    for plot in (view.loss_plot, view.change_plot):
        axis = plot.getAxis("left")
        label_height = axis.label.boundingRect().width()  # drawn rotated: its width is its height on screen
        assert label_height <= axis.size().height(), f"{axis.labelText!r} runs past its plot"
        assert axis.width() >= 60
    assert not view.loss_plot.getAxis("bottom").isVisible(), "the shared step axis is drawn once"
    save_shot(view, "training_view.png")


def test_the_layout_does_not_jump_when_the_tsne_finishes(qtbot, four_unit_folder):
    window = open_for_curation(qtbot, four_unit_folder)
    window.resize(1280, 800)  # a laptop
    window.docks["embedding"].raise_()  # curating, the Probe is the left column's tab in front
    embedding = window.views["embedding"]
    qtbot.waitUntil(lambda: embedding.embedding is not None, timeout=30_000)
    window.resizeDocks([window.docks["embedding"]], [300], Qt.Orientation.Horizontal)
    qtbot.wait(50)
    if embedding.embedding.tsne_fraction >= 1.0:
        pytest.skip("the t-SNE finished before its first layout was drawn")
    before = {name: dock.geometry() for name, dock in window.docks.items()}
    qtbot.waitUntil(lambda: embedding._job is None and embedding.embedding.tsne_fraction >= 1.0, timeout=60_000)
    qtbot.wait(50)
    assert "K to split" in embedding.caption.text()
    after = {name: dock.geometry() for name, dock in window.docks.items()}
    assert after == before
    save_shot(embedding, "embedding_done.png")
    window.close()


def test_waveforms_correlograms_and_filters_say_their_units(qtbot, four_unit_folder):
    window = open_for_curation(qtbot, four_unit_folder)
    window.session.select_units([0, 1])
    waveforms, correlograms, filters = (window.views[name] for name in ("waveforms", "correlograms", "filters"))
    window.docks["filters"].raise_()  # curating, a tab behind Waveforms
    for view in (waveforms, correlograms):
        view.refresh()
    qtbot.waitUntil(lambda: waveforms.scale_bar.microvolts is not None, timeout=10_000)
    bar = waveforms.scale_bar.bar.yData
    assert abs(bar[0] - bar[1]) == pytest.approx(waveforms.scale_bar.microvolts)  # drawn in µV
    time_bar = waveforms.time_bar.bar.xData
    assert abs(time_bar[1] - time_bar[0]) == pytest.approx(waveforms.time_bar.milliseconds)  # drawn in ms
    assert waveforms.scale_bar.label.textItem.toPlainText() == f"{waveforms.scale_bar.microvolts:g} µV"
    assert waveforms.time_bar.label.textItem.toPlainText() == f"{waveforms.time_bar.milliseconds:g} ms"

    qtbot.waitUntil(lambda: correlograms.shown_units == [0, 1], timeout=10_000)
    first_column, last_row = correlograms.cells[1][0], correlograms.cells[1]
    assert first_column.getAxis("left").labelText == "pairs / 1 ms" and first_column.getAxis("left").isVisible()
    assert all(cell.getAxis("bottom").labelText == "lag (ms)" for cell in last_row)
    assert correlograms.cells[0][1].getViewBox().linkedView(1) is correlograms.cells[0][0].getViewBox()

    rate = window.session.sorting.sampling_rate
    n_taps = window.session.sorting.templates.shape[1]
    assert f"{1000 * n_taps / rate:.2g} ms ({n_taps} samples) wide" in filters.scale_note.text()
    for name, view in (("waveforms", waveforms), ("correlograms", correlograms), ("filters", filters)):
        save_shot(view, f"{name}_units.png")
    window.close()


def test_one_replayed_action_is_said_in_the_singular(qtbot, four_unit_folder):
    window = open_for_curation(qtbot, four_unit_folder)
    window.session.select_units([0])
    qtbot.keyClick(window, Qt.Key.Key_G, Qt.KeyboardModifier.AltModifier)
    window.close()
    reopened = open_for_curation(qtbot, four_unit_folder)
    assert "1 action replayed" in reopened.status_label.text()
    reopened.close()


def test_the_default_layout_gives_every_unit_view_room(qtbot, four_unit_folder):
    """Amplitudes, Firing rate, Correlograms, ISI and Waveforms are readable at 1600 × 1000, not
    squeezed to slivers beside the Codes view and under the Units table (as they were)."""
    window = open_for_curation(qtbot, four_unit_folder)
    window.resize(1600, 1000)
    window.reset_layout()
    qtbot.wait(100)
    for name in ("amplitudes", "firing_rate", "correlograms", "isi", "waveforms"):
        size = window.docks[name].size()
        # Measured before the dock weights: Amplitudes 73 px wide, Waveforms 20 px tall.
        assert size.width() >= 240 and size.height() >= 100, (name, size)
    assert window.views["units"].proxy.rowCount() == 4
    assert window.views["units"].table_view.verticalScrollBar().maximum() == 0, "4 rows do not fit"
    save_shot(window, "default_layout.png")
    window.close()


def in_front(window, name) -> bool:
    """The dock is docked and drawn: not closed, not floating, not a tab behind another."""
    dock = window.docks[name]
    return dock.isVisible() and not dock.isFloating() and not dock.visibleRegion().isEmpty()


def test_curating_another_tools_sort_gives_the_training_docks_room_to_the_curation_views(
    qtbot, tiny_recording, four_unit_folder
):
    from app.main_window import MainWindow
    from tests.conftest import open_window

    window = open_for_curation(qtbot, four_unit_folder)
    window.resize(1920, 1200)
    qtbot.wait(100)
    assert window.layout_mode == "curation"
    for behind, front in (("training", "probe"), ("codes", "amplitudes"), ("filters", "waveforms")):
        assert in_front(window, front), f"{front} is in front while curating"
        assert not in_front(window, behind), f"{behind} waits behind {front}'s tab"
        assert window.docks[behind] in window.tabifiedDockWidgets(window.docks[front]), f"{behind} is a click away"
    assert window.docks["probe"].height() > 0.8 * window.docks["traces"].height() + window.docks["amplitudes"].height()
    window.docks["similarity"].close()  # the person's own change to the curation layout
    window.close()

    # A recording to sort gets the sorting layout, every dock in place...
    sorting = open_window(qtbot, tiny_recording)
    assert sorting.layout_mode == "sorting"
    for name in ("training", "codes", "filters", "amplitudes", "waveforms"):
        assert in_front(sorting, name), name
    sorting.close()

    # ...and the curation layout comes back as the person left it; Reset Layout restores its default.
    again = open_for_curation(qtbot, four_unit_folder)
    assert not again.docks["similarity"].isVisible()
    again.reset_layout()
    qtbot.wait(50)
    assert again.layout_mode == "curation" and again.docks["similarity"].isVisible()
    assert in_front(again, "probe") and not in_front(again, "training")
    save_shot(again, "curation_layout.png")
    again.close()
