"""A file that is not a recording, or too short to sort, is refused with the reason before anything is asked."""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PyQt6.QtWidgets import QDialog

from engine.io.file_check import check_recording_file
from engine.io.recording import RecordingError


@pytest.fixture
def shown_errors(monkeypatch):
    errors = []
    monkeypatch.setattr("app.main_window.show_error", lambda _parent, error: errors.append(error))
    return errors


def refused(window, qtbot, path, shown_errors):
    before = window.session.recording
    with qtbot.waitSignal(window.open_failed, timeout=10_000):
        window.open_path(path)
    assert window.findChild(QDialog, "raw_parameters_dialog") is None, "asked how to read a file that is no recording"
    assert window.session.recording is before
    assert len(shown_errors) == 1
    return shown_errors[0]


def test_a_tiny_text_file_is_refused_before_its_sampling_rate_is_asked(window, qtbot, tmp_path, shown_errors):
    notes = tmp_path / "notes.bin"
    notes.write_text("Mouse 3, session 2: good units on shank 1. " * 7)  # about 300 bytes
    error = refused(window, qtbot, notes, shown_errors)
    assert "is a text file (it starts 'Mouse 3, session 2" in error.message
    assert "Check the file" in error.advice


def test_a_pickled_npy_is_refused_without_numpy_advice(window, qtbot, tmp_path, shown_errors):
    objects = tmp_path / "random.npy"
    np.save(objects, np.array([{"a": 1}, "text", None], dtype=object), allow_pickle=True)
    error = refused(window, qtbot, objects, shown_errors)
    assert "holds Python objects" in error.message
    assert "allow_pickle" not in error.message + error.advice + error.details

    plain_pickle = tmp_path / "model.npy"
    plain_pickle.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    shown_errors.clear()
    error = refused(window, qtbot, plain_pickle, shown_errors)
    assert "is not a numpy array file" in error.message and "allow_pickle" not in error.message


def test_a_recording_too_short_to_sort_is_refused_with_its_length(window, qtbot, tmp_path, shown_errors):
    short = tmp_path / "short.npy"
    np.save(short, np.random.default_rng(0).normal(size=(150, 2)).astype(np.float32))
    with qtbot.waitSignal(window.open_failed, timeout=10_000):
        window.open_path(short, sampling_rate=30_000.0)
    assert len(shown_errors) == 1
    assert "150 samples, 0.005 s at 30000 Hz: too short to sort" in shown_errors[0].message


def test_recordings_pass_the_check():
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as folder:
        # int16 noise from a real amplifier has small values: its bytes are mostly NULs and 0xff.
        raw = Path(folder) / "data.bin"
        (rng.normal(scale=20, size=(1000, 4))).astype(np.int16).tofile(raw)
        check_recording_file(raw)
        array = Path(folder) / "data.npy"
        np.save(array, rng.normal(size=(100, 4)).astype(np.float32))
        check_recording_file(array)
        with pytest.raises(RecordingError, match="shape \\(100,\\)"):
            np.save(array, np.zeros(100, np.float32))
            check_recording_file(array)


def test_a_phy_folder_with_a_pickled_array_is_refused_in_plain_words(
    window, qtbot, tmp_path, tiny_recording, shown_errors
):
    from engine.io.phy import export_phy
    from tests.test_curation_gui import tiny_sorting

    sorting = tiny_sorting(tiny_recording)
    folder = export_phy(sorting, tmp_path / "sort")
    np.save(folder / "spike_clusters.npy", np.array([{"unit": 1}] * sorting.n_spikes, dtype=object), allow_pickle=True)
    with qtbot.waitSignal(window.open_failed, timeout=10_000):
        window.open_path(folder)
    assert len(shown_errors) == 1
    assert "spike_clusters.npy holds Python objects" in shown_errors[0].message
    assert "allow_pickle" not in shown_errors[0].message + shown_errors[0].advice + shown_errors[0].details
