"""Selecting a unit anywhere selects it everywhere; hidden views catch up when shown."""

from __future__ import annotations

import numpy as np
import pytest
from PyQt6.QtCore import QPointF, Qt

from app.palette import unit_rgb
from app.unit_table import build_unit_table
from engine.pipeline.sorting import Sorting


@pytest.fixture
def sorted_window(probe_window):
    """The window with a hand-made 3-unit sorting of the 4-channel recording (no training needed)."""
    window = probe_window
    recording = window.session.recording
    rng = np.random.default_rng(0)
    n_taps = 40
    taps = np.arange(n_taps)
    templates = np.zeros((3, n_taps, recording.n_channels), dtype=np.float32)
    for unit in range(3):
        templates[unit, :, unit % recording.n_channels] = -80.0 * (unit + 1) * np.exp(-0.5 * ((taps - 15) / 3.0) ** 2)
    # Spikes in the first second, where the Traces view looks, and beyond.
    spike_times = np.sort(rng.choice(np.arange(100, recording.n_samples - 100), 90, replace=False))
    spike_units = rng.integers(0, 3, 90)
    sorting = Sorting(spike_times, spike_units, np.full(90, 60.0), templates, recording.sampling_rate)
    window.session.set_sorting(sorting, build_unit_table(sorting, recording))
    return window


def row_of_unit(view, unit: int) -> int:
    """The row the unit is shown on, after the proxy's sorting."""
    return view.proxy.mapFromSource(view.model.index(view.model.row_of(unit), 0)).row()


def click_table_row(qtbot, view, row: int, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    rect = view.table_view.visualRect(view.proxy.index(row, 1))
    qtbot.mouseClick(view.table_view.viewport(), Qt.MouseButton.LeftButton, modifier, rect.center())


def click_filter(qtbot, view, unit: int, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    cell = next(cell for cell in view.cells if cell.unit == unit)
    point = view.graphics.mapFromScene(view.viewbox.mapViewToScene(cell.rect.center()))
    qtbot.mouseClick(view.graphics.viewport(), Qt.MouseButton.LeftButton, modifier, point)


def is_highlighted(filters_view, unit: int) -> bool:
    cell = next(cell for cell in filters_view.cells if cell.unit == unit)
    return cell.highlight.isVisible()


def test_units_table_shows_metrics_and_sorts_by_number(sorted_window, qtbot):
    view = sorted_window.views["units"]
    assert view.proxy.rowCount() == 3
    headers = [view.proxy.headerData(c, Qt.Orientation.Horizontal) for c in range(view.proxy.columnCount())]
    assert headers[:4] == ["Unit", "Label", "Sugg.", "Spikes"] and "SNR" in headers and "ISI\nviol." in headers
    # Sorting by amplitude (descending) puts unit 2, the largest template, first.
    view.table_view.sortByColumn(headers.index("Ptp\n(µV)"), Qt.SortOrder.DescendingOrder)
    assert view.proxy.index(0, 0).data() == "2"
    swatch = view.proxy.index(0, 0).data(Qt.ItemDataRole.DecorationRole)
    assert (swatch.red(), swatch.green(), swatch.blue()) == unit_rgb(2)


def test_table_selection_reaches_every_view(sorted_window, qtbot):
    units, filters, traces = (sorted_window.views[name] for name in ("units", "filters", "traces"))
    click_table_row(qtbot, units, row_of_unit(units, 1))
    qtbot.waitUntil(lambda: sorted_window.session.selected_units == (1,), timeout=2_000)
    assert is_highlighted(filters, 1) and not is_highlighted(filters, 0)

    click_table_row(qtbot, units, row_of_unit(units, 2), Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: set(sorted_window.session.selected_units) == {1, 2}, timeout=2_000)
    assert is_highlighted(filters, 2)
    # Markers of selected units are drawn larger, in their unit's colour.
    qtbot.waitUntil(lambda: len(traces.spikes.data) > 0, timeout=5_000)
    spots = traces.spikes.data
    big = traces.selected_markers.data
    assert len(big) and np.all(big["size"] > spots["size"].max()) and np.all(np.isin(big["data"], [1, 2]))
    # Every marker of a selected unit is drawn again, larger, and none of another unit.
    assert len(big) == np.isin(spots["data"], [1, 2]).sum()
    brush = spots["brush"][np.flatnonzero(spots["data"] == 0)[0]]
    assert brush.color().getRgb()[:3] == unit_rgb(0)


def test_a_click_is_published_at_once_and_arrow_keys_after_the_debounce(sorted_window, qtbot):
    units, session = sorted_window.views["units"], sorted_window.session
    click_table_row(qtbot, units, row_of_unit(units, 1))
    assert session.selected_units == (1,), "a click waits for no debounce"
    assert not units._selection_timer.isActive()
    units.table_view.setFocus()
    qtbot.keyClick(units.table_view, Qt.Key.Key_Down)
    assert units.selected_units_in_table() == [2] and session.selected_units == (1,), "a key is debounced"
    qtbot.waitUntil(lambda: session.selected_units == (2,), timeout=2_000)


def test_a_key_press_survives_a_table_refresh_before_it_is_published(sorted_window, qtbot):
    """Background metrics replace the table; a row chosen inside the selection's debounce must not be lost."""
    units = sorted_window.views["units"]
    click_table_row(qtbot, units, row_of_unit(units, 1))
    units.table_view.setFocus()
    qtbot.keyClick(units.table_view, Qt.Key.Key_Down)
    assert units._selection_timer.isActive()  # not published yet
    session = sorted_window.session
    session.set_sorting(session.sorting, session.unit_table)  # what a finished metrics job does
    qtbot.waitUntil(lambda: session.selected_units == (2,), timeout=2_000)
    assert units.selected_units_in_table() == [2]


def test_clicking_a_filter_selects_its_unit_in_the_table(sorted_window, qtbot):
    units, filters = sorted_window.views["units"], sorted_window.views["filters"]
    click_filter(qtbot, filters, 2)
    assert sorted_window.session.selected_units == (2,)
    assert units.selected_units_in_table() == [2]
    click_filter(qtbot, filters, 0, Qt.KeyboardModifier.ControlModifier)
    assert set(units.selected_units_in_table()) == {0, 2}


def test_clicking_a_spike_in_the_traces_selects_its_unit(sorted_window, qtbot):
    traces = sorted_window.views["traces"]
    qtbot.waitUntil(lambda: len(traces.spikes.data) > 0, timeout=5_000)
    spot = traces.spikes.data[0]
    scene_point = traces.plot.getViewBox().mapViewToScene(QPointF(spot["x"], spot["y"]))
    qtbot.mouseClick(traces.plot_widget.viewport(), Qt.MouseButton.LeftButton, pos=traces.plot_widget.mapFromScene(scene_point))
    assert sorted_window.session.selected_units == (int(spot["data"]),)
    assert sorted_window.views["units"].selected_units_in_table() == [int(spot["data"])]


def test_a_hidden_view_redraws_when_shown(sorted_window, qtbot):
    filters_dock, units_dock = sorted_window.docks["filters"], sorted_window.docks["units"]
    sorted_window.tabifyDockWidget(units_dock, filters_dock)
    units_dock.raise_()
    qtbot.waitUntil(lambda: not sorted_window.views["filters"].is_shown(), timeout=2_000)

    sorted_window.session.select_units([0])
    assert not is_highlighted(sorted_window.views["filters"], 0), "a hidden view should not redraw"

    filters_dock.raise_()
    qtbot.waitUntil(lambda: sorted_window.views["filters"].is_shown(), timeout=2_000)
    assert is_highlighted(sorted_window.views["filters"], 0)


def test_a_filter_split_by_amplitude_stands_for_its_own_unit(qapp):
    from app.state import Session

    session = Session()
    sorting = Sorting(
        spike_times=np.arange(6) * 100, spike_units=np.array([0, 1, 2, 0, 1, 2]), amplitudes=np.ones(6),
        templates=np.zeros((3, 10, 1)), sampling_rate=10_000.0,
        filter_index=np.array([0, 1, 0]),  # unit 2: filter 0's larger spikes
    )
    session.set_sorting(sorting, None)
    assert session.filter_unit_ids(2).tolist() == [0, 1]
