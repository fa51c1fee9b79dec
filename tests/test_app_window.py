"""The main window: docks, remembered layout, the Traces/Codes time axis, the launcher."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QDockWidget

from app.main_window import MainWindow
from app.views import VIEW_MODULES
from app.views.traces import MAX_POINTS

REPO = Path(__file__).resolve().parents[1]


def test_every_view_has_a_movable_closable_dock(window):
    assert set(window.docks) == set(VIEW_MODULES)
    for dock in window.docks.values():
        features = dock.features()
        assert features & QDockWidget.DockWidgetFeature.DockWidgetMovable
        assert features & QDockWidget.DockWidgetFeature.DockWidgetClosable
        assert dock.isVisible()
    assert window.windowTitle() == "Sparsort — recording.bin"


def test_the_layout_is_remembered_between_runs(window, qtbot, private_settings):
    window.docks["codes"].close()
    window.close()
    assert list(private_settings.rglob("*.ini")), "the layout should be saved in the test's settings folder"

    again = MainWindow()
    qtbot.addWidget(again)
    again.show()
    assert not again.docks["codes"].isVisible()
    assert again.docks["traces"].isVisible()
    again.reset_layout()
    assert again.docks["codes"].isVisible()


def test_traces_read_only_the_visible_window_and_zoom_out_to_an_envelope(probe_window, qtbot):
    window = probe_window
    traces = window.views["traces"]
    recording = window.session.recording
    n_channels = recording.n_channels
    qtbot.waitUntil(lambda: traces.traces_curve.xData is not None and len(traces.traces_curve.xData) > 0, timeout=5_000)
    x = traces.traces_curve.xData
    assert x.min() >= 0 and x.max() <= 1.0 + 1 / recording.sampling_rate  # nothing outside the window

    # Zoomed in, every sample is drawn, exactly.
    window.session.set_time_window(0.5, 0.6)
    qtbot.waitUntil(lambda: traces.traces_curve.xData.max() < 0.61, timeout=5_000)
    per_channel = len(traces.traces_curve.xData) // n_channels
    first = int(round(traces.traces_curve.xData[0] * recording.sampling_rate))
    expected = recording.get_traces(first, first + per_channel)
    offsets = traces._offsets()
    for channel in range(n_channels):  # stacked top to bottom, each on its own baseline
        drawn = traces.traces_curve.yData[channel * per_channel : (channel + 1) * per_channel]
        np.testing.assert_allclose(drawn - offsets[channel], expected[:, channel], rtol=1e-5, atol=1e-3)
    assert 1000 <= per_channel <= 1002

    window.session.set_time_window(0.0, recording.duration)
    qtbot.waitUntil(lambda: traces.traces_curve.xData.max() > recording.duration - 0.1, timeout=5_000)
    assert len(traces.traces_curve.xData) <= n_channels * MAX_POINTS
    assert "min/max" in traces.window_label.text()
    # The envelope keeps the extremes that plain decimation would miss.
    full = recording.get_traces(0, recording.n_samples)
    ys = traces.traces_curve.yData[: len(traces.traces_curve.xData) // n_channels]  # channel 0 (offset 0)
    assert np.isclose(ys.max(), full[:, 0].max(), rtol=1e-5) and np.isclose(ys.min(), full[:, 0].min(), rtol=1e-5)


def test_gain_scales_traces_without_rereading(probe_window, qtbot):
    traces = probe_window.views["traces"]
    qtbot.waitUntil(lambda: traces.traces_curve.yData is not None and len(traces.traces_curve.yData) > 0, timeout=5_000)
    channel_0 = len(traces.traces_curve.yData) // probe_window.session.recording.n_channels
    before = traces.traces_curve.yData[:channel_0].copy()
    traces.gain_box.setValue(2.0)
    np.testing.assert_allclose(traces.traces_curve.yData[:channel_0], 2.0 * before, rtol=1e-5)


def test_arrow_and_zoom_keys_move_the_traces_window(window, qtbot):
    traces = window.views["traces"]
    traces.plot_widget.setFocus()
    qtbot.keyClick(traces.plot_widget, Qt.Key.Key_Right)
    qtbot.waitUntil(lambda: np.allclose(window.session.time_window, (0.5, 1.5)), timeout=2_000)
    qtbot.keyClick(traces.plot_widget, Qt.Key.Key_Minus)
    qtbot.waitUntil(lambda: np.allclose(window.session.time_window, (0.0, 2.0)), timeout=2_000)
    qtbot.keyClick(traces.plot_widget, Qt.Key.Key_Left)  # stops at the start of the recording
    qtbot.waitUntil(lambda: window.session.time_window[0] == 0.0, timeout=2_000)


def test_codes_follow_the_traces_time_axis_and_back(window, qtbot):
    traces, codes = window.views["traces"], window.views["codes"]
    traces.plot.setXRange(1.0, 1.5, padding=0)
    qtbot.waitUntil(lambda: np.allclose(codes.plot.viewRange()[0], [1.0, 1.5]), timeout=2_000)
    assert np.allclose(window.session.time_window, (1.0, 1.5))
    codes.plot.setXRange(2.0, 2.25, padding=0)
    qtbot.waitUntil(lambda: np.allclose(traces.plot.viewRange()[0], [2.0, 2.25]), timeout=2_000)


def test_no_argument_opens_the_demo(qtbot):
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.opened, timeout=30_000):
        window.open_demo()
    assert window.session.recording.duration == 120.0
    assert window.views["training"].start_button.isEnabled()
    window.close()


def test_subcommands_go_to_the_engine_cli_without_loading_qt():
    # engine.cli.main is replaced by a stub that reports what it got: this test is about
    # the hand-over, and the real subcommands import torch, which takes seconds.
    probe = (
        "import sys\n"
        "import engine.cli\n"
        "engine.cli.main = lambda argv: print('cli got', argv) or 7\n"
        "from app.launcher import main\n"
        "code = main(['simulate', '--out', 'somewhere'])\n"
        "print('exit', code, 'qt loaded' if any(name.startswith('PyQt6') for name in sys.modules) else 'no qt')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.stdout.splitlines() == ["cli got ['simulate', '--out', 'somewhere']", "exit 7 no qt"], result.stderr


def test_impossible_model_flags_are_refused_before_the_window_opens(capsys):
    from app.launcher import main

    assert main(["--n-filters", "0"]) == 2
    assert "n_filters = 0 is out of range" in capsys.readouterr().err


def test_the_launchers_whitening_and_radius_flags_fill_the_training_config(capsys):
    from app.launcher import parse_arguments, training_config

    config = training_config(parse_arguments(["--whiten", "off", "--radius-um", "60"]))
    assert config.whiten is False and config.radius_um == 60
    assert training_config(parse_arguments(["--whiten", "auto"])).whiten is None
    with pytest.raises(SystemExit):
        parse_arguments(["--whiten", "sometimes"])
    assert "--whiten takes auto, on or off, got 'sometimes'" in capsys.readouterr().err


def test_screenshot_mode_trains_sorts_and_saves_a_picture(qtbot, tmp_path, tiny_recording):
    from PyQt6.QtGui import QImage

    from app.launcher import main

    picture = tmp_path / "window.png"
    small_model = ["--n-filters", "3", "--n-iterations", "15", "--batch-size", "4", "--window-ms", "30"]
    assert main(["--screenshot", str(picture), "--train-steps", "2", *small_model, str(tiny_recording)]) == 0
    image = QImage(str(picture))
    assert image.width() >= 1200 and image.height() >= 800
    # The window is gone once main() returns, not left for Python's exit to take apart in any order.
    from PyQt6.QtWidgets import QApplication

    from app.main_window import MainWindow

    assert not [widget for widget in QApplication.topLevelWidgets() if isinstance(widget, MainWindow)]
