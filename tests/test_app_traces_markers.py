"""Traces: each spike marker on its unit's main channel, on the drawn trace; a µV scale bar that follows the gain."""

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


@pytest.fixture
def kilosort_like_folder(tmp_path, tiny_probe_recording):
    """The 4-channel recording's true sort, with amplitudes as Kilosort writes them: template scalings, not µV."""
    truth = GroundTruth.load(tiny_probe_recording.parent / "ground_truth").to_sorting()
    scalings = np.full(truth.n_spikes, 25.0, dtype=np.float32)
    sorting = Sorting(
        truth.spike_times, truth.spike_units, scalings, truth.templates, truth.sampling_rate, truth.template_peak_taps
    )
    return export_phy(sorting, tmp_path / "ks_sort", recording=open_recording(tiny_probe_recording))


def drawn_markers(traces):
    points = traces.spikes.data
    return points["x"].astype(float), points["y"].astype(float)


def test_markers_sit_on_the_trace_of_their_units_main_channel(qtbot, kilosort_like_folder):
    window = open_for_curation(qtbot, kilosort_like_folder)
    window.resize(1400, 900)
    traces = window.views["traces"]
    window.session.set_time_window(0.2, 0.45)
    qtbot.waitUntil(lambda: traces.traces_curve.xData is not None and traces.traces_curve.xData.min() >= 0.19, timeout=5_000)
    qtbot.waitUntil(lambda: len(traces.spikes.data) > 0, timeout=5_000)
    sorting = window.session.sorting
    rate = sorting.sampling_rate
    x, y = drawn_markers(traces)
    times = np.round(x * rate).astype(np.int64)
    spikes = np.searchsorted(sorting.spike_times, times)
    channels = sorting.main_channels()[sorting.spike_units[spikes]]
    n_channels = window.session.recording.n_channels
    per_channel = len(traces.traces_curve.xData) // n_channels
    curve_x = traces.traces_curve.xData[:per_channel]
    (_x0, _x1), (bottom, top) = traces.plot.viewRange()
    assert np.all((y > bottom) & (y < top)), "a marker off-screen"
    for marker_x, marker_y, channel in zip(x, y, channels):
        near = np.abs(curve_x - marker_x) <= 0.3e-3 + 0.5 / rate
        on_channel = traces.traces_curve.yData[channel * per_channel : (channel + 1) * per_channel][near]
        assert np.min(np.abs(on_channel - marker_y)) < 1e-3, "marker not on its channel's drawn trace"
    shots = os.environ.get("SPARSORT_TEST_SHOTS")
    if shots:
        traces.grab().save(os.path.join(shots, "traces_markers.png"))
    window.close()


def test_the_scale_bar_says_how_tall_a_microvolt_is_at_this_gain(probe_window, qtbot):
    traces = probe_window.views["traces"]
    qtbot.waitUntil(lambda: traces.traces_curve.yData is not None and len(traces.traces_curve.yData) > 0, timeout=5_000)

    def bar():
        ys = traces.scale_bar.bar.yData
        microvolts = float(traces.scale_bar.label.textItem.toPlainText().removesuffix(" µV"))
        return abs(ys[0] - ys[1]), microvolts

    height, microvolts = bar()
    assert height == pytest.approx(microvolts)  # gain 1: one µV is one unit of the y axis
    assert microvolts <= 0.5 * traces._spacing()
    traces.gain_box.setValue(4.0)
    height, microvolts = bar()
    assert height == pytest.approx(4.0 * microvolts)
    (x0, x1), (y0, y1) = traces.plot.viewRange()
    bar_x, bar_y = traces.scale_bar.bar.xData, traces.scale_bar.bar.yData
    assert x0 < bar_x[0] < x1 and y0 < bar_y.min() < bar_y.max() < y1
    traces.plot_widget.setFocus()
    qtbot.keyClick(traces.plot_widget, Qt.Key.Key_Right)
    qtbot.waitUntil(lambda: traces.plot.viewRange()[0][0] > x0, timeout=2_000)
    (x0, x1), _ = traces.plot.viewRange()
    assert x0 < traces.scale_bar.bar.xData[0] < x1, "the bar follows the scrolled window"
