"""Traces, Filters and Codes follow the curation: spikes and filters show the unit they belong to now."""

from __future__ import annotations

import numpy as np
import pytest
from PyQt6.QtCore import Qt

from app.main_window import MainWindow
from app.palette import unit_rgb
from engine.io.phy import export_phy
from engine.io.recording import open_recording
from engine.evaluation.simulator import GroundTruth

# Kilosort-like cluster ids, unlike the sort's unit indices 0 and 1: the views must show these.
CLUSTER_IDS = np.array([5, 17])
MERGED = 18  # the id a merge of 5 and 17 gets


@pytest.fixture
def curating(qtbot, tmp_path, tiny_recording, monkeypatch):
    errors = []
    monkeypatch.setattr("app.main_window.show_error", lambda _parent, error: errors.append(error))
    truth = GroundTruth.load(tiny_recording.parent / "ground_truth").to_sorting()
    folder = export_phy(truth, tmp_path / "sort", recording=open_recording(tiny_recording))
    np.save(folder / "spike_clusters.npy", CLUSTER_IDS[np.load(folder / "spike_clusters.npy")].astype(np.int32))
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
    yield window
    window.close()
    assert not errors


def press(qtbot, window, key, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    qtbot.keyClick(window, key, modifier)


def marker_units(traces) -> set[int]:
    return set(traces.spikes.data["data"].tolist())


def marker_colours(traces) -> set[tuple[int, int, int]]:
    return {tuple(brush.color().getRgb()[:3]) for brush in traces.spikes.data["brush"]}


def filter_titles(filters) -> list[str]:
    return [cell.title.textItem.toPlainText() for cell in filters.cells]


def click_filter(qtbot, filters, index: int) -> None:
    cell = filters.cells[index]
    point = filters.graphics.mapFromScene(filters.viewbox.mapViewToScene(cell.rect.center()))
    qtbot.mouseClick(filters.graphics.viewport(), Qt.MouseButton.LeftButton, pos=point)


def test_traces_and_filters_follow_merge_undo_and_split(curating, qtbot):
    window, session = curating, curating.session
    traces, filters = window.views["traces"], window.views["filters"]
    window.docks["filters"].raise_()  # curating, a tab behind Waveforms
    qtbot.waitUntil(lambda: len(traces.spikes.data) > 0, timeout=5_000)
    assert marker_units(traces) == {5, 17}
    assert filter_titles(filters) == ["unit 5", "unit 17"]

    session.select_units([5, 17])
    press(qtbot, window, Qt.Key.Key_G)
    assert session.curation.unit_ids.tolist() == [MERGED]
    assert marker_units(traces) == {MERGED}
    assert marker_colours(traces) == {unit_rgb(MERGED)}
    assert filter_titles(filters) == [f"unit {MERGED}", f"unit {MERGED}"]
    pen_colours = {cell.current.opts["pen"].color().getRgb()[:3] for cell in filters.cells}
    assert pen_colours == {unit_rgb(MERGED)}

    session.select_units([])
    click_filter(qtbot, filters, 1)
    assert session.selected_units == (MERGED,), "a filter selects the unit that exists now"

    press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert marker_units(traces) == {5, 17}
    assert marker_colours(traces) == {unit_rgb(5), unit_rgb(17)}
    assert filter_titles(filters) == ["unit 5", "unit 17"]

    # Split the first quarter of unit 17's spikes off with a lasso: the filter goes with the rest.
    session.select_units([17])
    amplitudes, sorting = window.views["amplitudes"], session.sorting
    amplitudes.refresh()
    quarter_s = sorting.spike_times[-1] / sorting.sampling_rate / 4
    top = float(sorting.amplitudes.max()) * 2
    amplitudes.lasso.set_polygon([(0.0, -1.0), (quarter_s, -1.0), (quarter_s, top), (0.0, top)])
    press(qtbot, window, Qt.Key.Key_K)
    parts = [u for u in session.curation.unit_ids.tolist() if u not in (5, 17)]
    assert len(parts) == 2
    rest = max(parts, key=session.curation.spike_count)
    assert filter_titles(filters) == ["unit 5", f"unit {rest} (split)"]
    assert marker_units(traces) <= {5, *parts}


def test_the_codes_hint_wraps_inside_its_plot(curating, qtbot):
    codes = curating.views["codes"]
    curating.docks["codes"].raise_()  # curating, a tab behind Amplitudes
    curating.docks["codes"].resize(220, 200)
    curating.resizeDocks([curating.docks["codes"]], [220], Qt.Orientation.Horizontal)
    qtbot.waitUntil(lambda: codes.plot.getViewBox().boundingRect().width() < 300, timeout=2_000)
    assert codes.hint.isVisible()
    hint_width = codes.hint.textItem.boundingRect().width()
    assert hint_width <= codes.plot.getViewBox().boundingRect().width()
