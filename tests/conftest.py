"""Shared fixtures: a tiny simulated recording, settings kept away from the user's, a window."""

from __future__ import annotations

import faulthandler
import os

import pytest

# Offscreen unless the person running the tests asked for a real display.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Keep the fault handler on after pytest's own is off: a crash while Python exits (Qt objects
    taken apart in the interpreter's teardown) then prints its traceback, not just exit code 139."""
    faulthandler.enable()


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Generated files (the demo recording) go to a temporary folder, not ~/.cache."""
    folder = tmp_path_factory.mktemp("sparsort_cache")
    previous = os.environ.get("SPARSORT_CACHE")
    os.environ["SPARSORT_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("SPARSORT_CACHE", None)
    else:
        os.environ["SPARSORT_CACHE"] = previous


@pytest.fixture(autouse=True)
def private_settings(tmp_path, request):
    """Window layout and recent files go to a per-test folder, never the user's settings."""
    if "qapp" not in request.fixturenames and "qtbot" not in request.fixturenames:
        yield None
        return
    from PyQt6.QtCore import QSettings

    folder = tmp_path / "settings"
    folder.mkdir()
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(folder))
    yield folder


def _simulated(folder, n_channels: int, duration_s: float):
    from engine.evaluation.simulator import write_simulation

    paths = write_simulation(
        folder, duration_s=duration_s, n_units=2, sampling_rate=10_000.0, n_channels=n_channels, firing_rates=20.0, seed=3
    )
    return paths.recording


@pytest.fixture(scope="session")
def tiny_recording(tmp_path_factory):
    """4 s, 1 channel, 10 kHz, 2 units: big enough to train on, small enough to be quick."""
    return _simulated(tmp_path_factory.mktemp("tiny_recording"), n_channels=1, duration_s=4.0)


@pytest.fixture(scope="session")
def tiny_probe_recording(tmp_path_factory):
    """2 s, 4 channels: for what needs several channels on screen (no training)."""
    return _simulated(tmp_path_factory.mktemp("tiny_probe_recording"), n_channels=4, duration_s=2.0)


# Few filters, few unrolled steps, short windows: each step takes milliseconds.
SMALL_TRAINING = {
    "n_filters": "3",
    "n_iterations": "15",
    "batch_size": "4",
    "window_ms": "30",
    "n_epochs": "2",
}


def fill_training_form(window, values: dict[str, str]) -> None:
    view = window.views["training"]
    for field, text in values.items():
        view.fields[field].setText(text)


def open_window(qtbot, path):
    """A shown main window with `path` open and a small training config."""
    from app.main_window import MainWindow

    main_window = MainWindow()
    qtbot.addWidget(main_window)
    main_window.show()
    with qtbot.waitSignal(main_window.opened, timeout=20_000):
        main_window.open_path(path)
    fill_training_form(main_window, SMALL_TRAINING)
    return main_window


@pytest.fixture
def window(qtbot, tiny_recording):
    """The main window on the 1-channel tiny recording, ready to train."""
    main_window = open_window(qtbot, tiny_recording)
    yield main_window
    main_window.close()


@pytest.fixture
def probe_window(qtbot, tiny_probe_recording):
    """The main window on the 4-channel tiny recording."""
    main_window = open_window(qtbot, tiny_probe_recording)
    yield main_window
    main_window.close()
