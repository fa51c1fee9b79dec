"""The app at probe scale: a 64-channel, two-column phy folder driven through the probe, traces and table views."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PyQt6.QtCore import Qt

from tests.test_curation_gui import open_for_curation


def two_column_positions(n_channels: int, pitch_um: float = 20.0) -> np.ndarray:
    """(n_channels, 2) µm: two columns 32 µm apart, one row every `pitch_um`."""
    return np.column_stack([np.where(np.arange(n_channels) % 2, 32.0, 0.0), (np.arange(n_channels) // 2) * pitch_um])


def write_probe_folder(folder: Path, n_channels: int = 64, n_units: int = 10, duration_s: float = 3.0) -> Path:
    """A simulated many-channel recording and its true sort, as a phy folder in `folder`/sort."""
    from engine.evaluation.simulator import GroundTruth, write_simulation
    from engine.io.phy import export_phy
    from engine.io.recording import open_recording

    paths = write_simulation(
        folder / "recording", duration_s=duration_s, n_units=n_units, sampling_rate=10_000.0, n_channels=n_channels,
        firing_rates=15.0, seed=5, channel_positions=two_column_positions(n_channels),
    )
    truth = GroundTruth.load(paths.truth).to_sorting()
    return export_phy(truth, folder / "sort", recording=open_recording(paths.recording))


@pytest.fixture(scope="module")
def probe_folder(tmp_path_factory):
    return write_probe_folder(tmp_path_factory.mktemp("probe64"))


@pytest.fixture
def curating(qtbot, probe_folder):
    window = open_for_curation(qtbot, probe_folder)
    window.resize(1600, 1000)
    yield window
    window.close()


def save_shot(widget, name: str) -> None:
    folder = os.environ.get("SPARSORT_TEST_SHOTS")
    if folder:
        widget.grab().save(os.path.join(folder, name))


def show_view(qtbot, window, name: str):
    window.docks[name].show()
    window.docks[name].raise_()
    view = window.views[name]
    qtbot.waitUntil(view.is_shown, timeout=5_000)
    return view


def click_scene_point(qtbot, plot_widget, plot, x: float, y: float, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    point = plot_widget.mapFromScene(plot.vb.mapViewToScene(pg_point(x, y)))
    qtbot.mouseClick(plot_widget.viewport(), Qt.MouseButton.LeftButton, modifier, point)


def pg_point(x: float, y: float):
    from PyQt6.QtCore import QPointF

    return QPointF(float(x), float(y))


def test_the_probe_view_draws_every_channel_and_unit_and_a_click_selects(curating, qtbot):
    window = curating
    probe = show_view(qtbot, window, "probe")
    table = window.session.unit_table
    qtbot.waitUntil(lambda: len(probe.unit_ids) == len(table.unit_ids), timeout=5_000)
    assert len(probe.channel_spots.data) == 64
    np.testing.assert_allclose(probe.channel_positions, two_column_positions(64))
    # Each unit is drawn at its table position, which lies on the probe near its main channel.
    drawn = np.column_stack([probe.unit_spots.data["x"], probe.unit_spots.data["y"]])
    np.testing.assert_allclose(drawn, table.positions)
    main_positions = probe.channel_positions[table.main_channels]
    assert np.all(np.linalg.norm(table.positions - main_positions, axis=1) < 100.0)

    unit = int(table.unit_ids[3])
    qtbot.wait(50)
    click_scene_point(qtbot, probe.plot_widget, probe.plot, *table.positions[3])
    qtbot.waitUntil(lambda: window.session.selected_units == (unit,), timeout=2_000)
    # Its neighbourhood of channels is lit in its colour, the rest stay dark.
    assert table.main_channels[3] in probe.highlighted
    assert 1 < len(probe.highlighted) <= 16
    # It is drawn again above the others, larger; the others' spots are left as they were.
    selected = probe.selected_unit_spots.data
    assert selected["data"].tolist() == [unit]
    assert selected["size"][0] > probe.unit_spots.data["size"].max()
    assert np.allclose([selected["x"][0], selected["y"][0]], table.positions[3])
    save_shot(probe, "probe_64.png")


def test_many_channels_open_as_a_heat_map_of_every_channel(curating, qtbot):
    traces = curating.views["traces"]
    assert traces.is_heatmap(), "64 channels open as a heat map"
    qtbot.waitUntil(lambda: traces.image.image is not None and traces.image.isVisible(), timeout=5_000)
    assert traces.image.image.shape[1] == 64 and not traces.scale_bar.microvolts
    # Markers sit on their unit's main channel row.
    qtbot.waitUntil(lambda: len(traces.spikes.data) > 0, timeout=5_000)
    # (This folder's cluster ids are the sort's unit indices, and nothing was curated.)
    spots = traces.spikes.data
    assert np.array_equal(-spots["y"], curating.session.sorting.main_channels()[spots["data"].astype(np.int64)])
    save_shot(traces, "traces_heatmap_64.png")


def test_traces_mode_reads_a_range_of_channels_and_scrolls_along_the_probe(curating, qtbot, monkeypatch):
    import app.views.traces as traces_module

    traces = curating.views["traces"]
    read = []
    original = traces_module.read_envelope

    def recording_read(recording, start, stop, max_points, channels=None):
        read.append(None if channels is None else list(channels))
        return original(recording, start, stop, max_points, channels=channels)

    monkeypatch.setattr(traces_module, "read_envelope", recording_read)
    traces.heatmap_box.setChecked(False)
    traces.channel_count_box.setValue(16)
    qtbot.waitUntil(lambda: traces._cached is not None and len(traces._cached[3]) == 16, timeout=5_000)
    assert list(traces._cached[3]) == list(range(16))
    assert read[-1] == list(range(16)), "only the visible channels are read"
    assert len(traces.traces_curve.xData) // 16 <= 3000
    assert not traces.image.isVisible()

    traces.plot_widget.setFocus()
    qtbot.keyClick(traces.plot_widget, Qt.Key.Key_PageDown)
    qtbot.waitUntil(lambda: traces._cached[3][0] == 16, timeout=5_000)
    assert list(traces.visible_channels()) == list(range(16, 32))
    qtbot.keyClick(traces.plot_widget, Qt.Key.Key_Down, Qt.KeyboardModifier.ShiftModifier)
    assert traces.first_channel == 20, "Shift+↓ moves a quarter of the range"
    for _ in range(10):
        qtbot.keyClick(traces.plot_widget, Qt.Key.Key_PageDown)
    assert list(traces.visible_channels()) == list(range(48, 64)), "the range stops at the last channel"
    qtbot.keyClick(traces.plot_widget, Qt.Key.Key_PageUp)
    assert traces.first_channel == 32
    qtbot.waitUntil(lambda: traces._cached[3][0] == 32, timeout=5_000)
    # Markers are only those of units whose main channel is on screen, on that channel's trace.
    qtbot.waitUntil(lambda: len(traces.spikes.data) > 0, timeout=5_000)
    channels = curating.session.sorting.main_channels()[traces.spikes.data["data"].astype(np.int64)]
    assert np.all((channels >= 32) & (channels < 48))
    save_shot(traces, "traces_stacked_64.png")

    # Selecting a unit whose main channel is off screen brings it into the middle of the range.
    table = curating.session.unit_table
    row = int(np.flatnonzero(table.main_channels < 16)[0])
    curating.session.select_units([int(table.unit_ids[row])])
    channel = int(table.main_channels[row])
    assert channel in traces.visible_channels() and traces.first_channel == max(channel - 8, 0)
    qtbot.waitUntil(lambda: channel in traces._cached[3], timeout=5_000)


def test_shift_wheel_scrolls_channels(curating, qtbot):
    from PyQt6.QtCore import QPoint, QPointF
    from PyQt6.QtGui import QWheelEvent
    from PyQt6.QtWidgets import QApplication

    traces = curating.views["traces"]
    traces.heatmap_box.setChecked(False)
    viewport = traces.plot_widget.viewport()
    centre = QPointF(viewport.rect().center())
    wheel = QWheelEvent(centre, viewport.mapToGlobal(centre), QPoint(), QPoint(0, -120), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.ShiftModifier, Qt.ScrollPhase.NoScrollPhase, False)
    (start_before, stop_before), _ = traces.plot.viewRange()
    QApplication.sendEvent(viewport, wheel)
    assert traces.first_channel == 8, "one notch down moves a quarter of the 32 channels"
    assert traces.plot.viewRange()[0] == [start_before, stop_before], "the time range stays"


def shown_units(units_view) -> list[int]:
    proxy = units_view.proxy
    return [units_view.model.unit_at(proxy.mapToSource(proxy.index(row, 0)).row()) for row in range(proxy.rowCount())]


def test_the_table_shows_depth_and_its_filter_hides_units_and_space_follows_it(curating, qtbot):
    window = curating
    units = window.views["units"]
    table = window.session.unit_table
    qtbot.waitUntil(lambda: units.proxy.rowCount() == len(table.unit_ids), timeout=5_000)
    headers = [units.model.headerData(c, Qt.Orientation.Horizontal) for c in range(units.model.columnCount())]
    depth_column = headers.index("Depth\n(µm)")
    row = units.proxy.index(0, depth_column)
    unit = units.model.unit_at(units.proxy.mapToSource(row).row())
    assert float(row.data()) == pytest.approx(table.positions[list(table.unit_ids).index(unit), 1], abs=0.5)

    middle = float(np.median(table.positions[:, 1]))
    qtbot.keyClicks(units.filter_box, f"depth < {middle:.1f}")
    expected = sorted(int(u) for u, y in zip(table.unit_ids, table.positions[:, 1]) if y < round(middle, 1))
    qtbot.waitUntil(lambda: sorted(shown_units(units)) == expected, timeout=2_000)
    assert 0 < len(expected) < len(table.unit_ids)
    assert units.filter_message.text() == f"{len(expected)} of {len(table.unit_ids)} units shown"

    # Space steps through the rows left, in their order, and no others.
    units.table_view.sortByColumn(depth_column, Qt.SortOrder.DescendingOrder)
    order = shown_units(units)
    stepped = []
    for _ in range(len(order)):
        qtbot.keyClick(window, Qt.Key.Key_Space)
        stepped.append(window.session.selected_units[0])
    assert stepped == order
    save_shot(units, "units_filtered_64.png")

    units.filter_box.setText("snr >")
    qtbot.waitUntil(lambda: "COLUMN OP NUMBER" in units.filter_message.text(), timeout=2_000)
    assert units.proxy.rowCount() == len(table.unit_ids), "an unreadable filter hides nothing"
    units.filter_box.clear()
    qtbot.waitUntil(lambda: not units.filter_message.isVisible(), timeout=2_000)


def test_waveforms_are_laid_out_on_the_selected_units_neighbourhoods(curating, qtbot):
    from engine.curation.unit_positions import neighbourhood

    window = curating
    waveforms = show_view(qtbot, window, "waveforms")
    table = window.session.unit_table
    first, second = (int(u) for u in table.unit_ids[:2])
    window.session.select_units([first, second])
    qtbot.waitUntil(lambda: set(waveforms.means) == {first, second}, timeout=10_000)
    positions = window.session.sorting.channel_positions
    mains = dict(zip(table.unit_ids.tolist(), table.main_channels.tolist()))
    expected = set(neighbourhood(positions, mains[first]).tolist()) | set(neighbourhood(positions, mains[second]).tolist())
    assert set(waveforms.channels.tolist()) == expected
    assert len(neighbourhood(positions, mains[first])) <= 16
    # The snippets of the two columns sit side by side: the mean's x values span two column places.
    xs = waveforms.means[first].xData
    snippet_ms = 2.5
    assert xs.max() - xs.min() > 2 * snippet_ms
    # At most 100 spikes per unit, each a segment on every channel shown.
    n_points = len(waveforms.single_spikes[first].xData)
    assert n_points <= 100 * len(waveforms.channels) * 25 + 1
    assert waveforms.scale_bar.microvolts and waveforms.time_bar.milliseconds
    save_shot(waveforms, "waveforms_64.png")
