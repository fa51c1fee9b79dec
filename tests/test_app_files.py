"""Opening files from the GUI (good, bad, headerless, phy folders) and saving/reopening sessions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PyQt6.QtWidgets import QDialog

from app.main_window import MainWindow
from app.state import TrainingState


@pytest.fixture
def shown_errors(monkeypatch):
    errors = []
    monkeypatch.setattr("app.main_window.show_error", lambda _parent, error: errors.append(error))
    return errors


def test_a_bad_file_shows_the_error_and_keeps_the_session(window, qtbot, tmp_path, shown_errors):
    before = window.session.recording
    title = window.windowTitle()
    bad = tmp_path / "broken.bin"
    bad.write_bytes(b"\x00" * 1001)  # not a whole number of 2-channel int16 frames
    (tmp_path / "broken.json").write_text(json.dumps({"sampling_rate": 30000, "n_channels": 2, "dtype": "int16"}))

    with qtbot.waitSignal(window.open_failed, timeout=10_000):
        window.open_path(bad)

    assert len(shown_errors) == 1
    assert "not a whole number of frames" in shown_errors[0].message
    assert "sampling rate, channel count and data type" in shown_errors[0].advice
    assert window.session.recording is before
    assert window.windowTitle() == title


def test_a_headerless_binary_asks_how_to_read_it(window, qtbot, tmp_path):
    raw = tmp_path / "headerless.dat"
    traces = (np.random.default_rng(0).standard_normal((24_000, 4)) * 50).astype(np.int16)
    raw.write_bytes(traces.tobytes())

    window.open_path(raw)
    dialog = window.findChild(QDialog, "raw_parameters_dialog")
    assert dialog is not None and dialog.isVisible()
    dialog.sampling_rate.setValue(20_000)
    dialog.n_channels.setValue(4)
    dialog.dtype.setCurrentText("int16")
    with qtbot.waitSignal(window.opened, timeout=10_000):
        dialog.accept()

    recording = window.session.recording
    assert (recording.n_channels, recording.sampling_rate, recording.n_samples) == (4, 20_000, 24_000)
    assert window.session.source.dtype == "int16"
    assert str(raw.resolve()) in [action.text() for action in window.recent_menu.actions()]


def test_a_phy_folder_opens_with_its_units_and_labels(window, qtbot, tmp_path, tiny_probe_recording):
    from engine.io.phy import export_phy
    from engine.io.recording import open_recording
    from engine.pipeline.sorting import Sorting

    recording = open_recording(tiny_probe_recording)
    templates = np.zeros((2, 30, recording.n_channels), dtype=np.float32)
    templates[:, 10, :] = [[-90.0, -20.0, 0.0, 0.0], [0.0, -15.0, -70.0, -10.0]]
    sorting = Sorting(np.array([500, 9000, 20000]), np.array([0, 1, 0]), np.full(3, 80.0), templates, recording.sampling_rate)
    folder = export_phy(sorting, tmp_path / "sort", recording=recording, cluster_groups={1: "good"})

    with qtbot.waitSignal(window.opened, timeout=10_000):
        window.open_path(folder)

    assert window.session.sorting.n_spikes == 3
    assert window.session.unit_table.labels == ["", "good"]
    assert window.session.recording is not None and window.session.recording.n_channels == 4
    assert window.views["units"].proxy.rowCount() == 2
    # Without a trained model, the Filters view shows the units' templates (a tab behind Waveforms).
    window.docks["filters"].raise_()
    qtbot.waitUntil(lambda: [cell.unit for cell in window.views["filters"].cells] == [0, 1], timeout=5_000)


def test_a_session_reopens_with_the_same_filters_and_sort(window, qtbot, tmp_path, shown_errors):
    config = window.views["training"].config()
    window.engine.start_training(config, max_steps=3)
    qtbot.waitUntil(lambda: window.session.sorting is not None, timeout=60_000)
    qtbot.waitUntil(lambda: window.session.training_state == TrainingState.IDLE, timeout=10_000)
    trained_filters = window.session.trainer.filters()
    sorting = window.session.sorting

    with qtbot.waitSignal(window.saved, timeout=20_000):
        window.save_session(tmp_path / "session")

    reopened = MainWindow()
    qtbot.addWidget(reopened)
    reopened.show()
    started = []
    reopened.session.training_state_changed.connect(started.append)
    with qtbot.waitSignal(reopened.opened, timeout=30_000):
        reopened.open_path(tmp_path / "session")

    session = reopened.session
    np.testing.assert_allclose(session.trainer.filters(), trained_filters, atol=1e-6)
    np.testing.assert_array_equal(session.sorting.spike_times, sorting.spike_times)
    np.testing.assert_array_equal(session.sorting.spike_units, sorting.spike_units)
    assert session.training_config == config
    assert started == [], "reopening must not retrain"
    assert reopened.views["training"].fields["n_iterations"].text() == str(config.n_iterations)
    # The Filters view draws what it drew before saving.
    before, after = window.views["filters"].cells, reopened.views["filters"].cells
    assert len(before) == len(after) == len(trained_filters)
    for old_cell, new_cell in zip(before, after):
        np.testing.assert_allclose(new_cell.current.getData()[1], old_cell.current.getData()[1], atol=1e-5)
        assert new_cell.unit == old_cell.unit
    assert not shown_errors
    reopened.close()
