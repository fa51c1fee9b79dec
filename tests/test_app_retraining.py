"""Opening a sort to curate never trains; Start says what a new sort would do to the curation; the bar tells the truth."""

from __future__ import annotations

import json

import pytest
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QMessageBox

from app.state import TrainingState
from tests.test_curation_gui import current_units, open_for_curation, phy_folder, press, shown_errors  # noqa: F401



@pytest.fixture
def no_model_built(monkeypatch):
    """Fails the test if anything builds a Trainer (the model, its pool and filters)."""
    built = []

    def refuse(self, *args, **kwargs):
        built.append(args)
        raise AssertionError("a training model was built")

    monkeypatch.setattr("engine.pipeline.training.Trainer.__init__", refuse)
    return built


def save_shot(widget, name):
    import os

    folder = os.environ.get("SPARSORT_TEST_SHOTS")
    if folder:
        widget.grab().save(os.path.join(folder, name))


def test_curating_a_foreign_phy_folder_builds_no_model_and_start_explains_itself(
    qtbot, phy_folder, shown_errors, no_model_built  # noqa: F811
):
    window = open_for_curation(qtbot, phy_folder)
    window.docks["training"].raise_()  # curating, a tab behind the Probe
    training = window.views["training"]
    assert window.session.recording is not None
    assert not training.start_button.isEnabled()
    assert training.start_note.isVisible()
    assert "sorted by another tool" in training.start_note.text()
    assert "File > Open Recording" in training.start_note.text()
    qtbot.mouseClick(training.start_button, Qt.MouseButton.LeftButton)
    assert window.session.training_state == TrainingState.IDLE
    save_shot(training, "training_foreign_sort.png")
    window.close()
    assert no_model_built == [] and not shown_errors


def test_start_on_a_sparsort_sort_asks_first_and_cancel_keeps_the_curation(
    qtbot, phy_folder, shown_errors, no_model_built  # noqa: F811
):
    (phy_folder / "sparsort.json").write_text(json.dumps({"n_units": 3}))
    window = open_for_curation(qtbot, phy_folder)
    window.docks["training"].raise_()  # curating, a tab behind the Probe
    training = window.views["training"]
    assert training.start_button.isEnabled() and not training.start_note.isVisible()
    qtbot.mouseClick(training.start_button, Qt.MouseButton.LeftButton)
    dialog = window.findChild(QMessageBox, "retrain_dialog")
    assert dialog is not None and dialog.isVisible()
    assert "replaces the 3 units on screen" in dialog.text()
    assert str(phy_folder.resolve()) in dialog.informativeText() and "untouched" in dialog.informativeText()
    save_shot(dialog, "retrain_dialog.png")
    dialog.button(QMessageBox.StandardButton.Cancel).click()
    assert window.session.training_state == TrainingState.IDLE
    assert window.session.curation is not None and current_units(window) == [0, 1, 2]
    window.close()
    assert no_model_built == [] and not shown_errors


def test_the_screenshot_of_a_phy_folder_trains_nothing(qtbot, tmp_path, phy_folder, no_model_built):  # noqa: F811
    from app.launcher import main

    picture = tmp_path / "sort.png"
    assert main(["--screenshot", str(picture), str(phy_folder)]) == 0
    assert picture.is_file() and no_model_built == []


def test_the_bar_follows_merges_and_resets_when_a_new_recording_opens(
    qtbot, phy_folder, shown_errors, tiny_probe_recording  # noqa: F811
):
    window = open_for_curation(qtbot, phy_folder)
    window.docks["training"].raise_()  # curating, a tab behind the Probe
    progress = window.views["training"].progress
    n_spikes = window.session.sorting.n_spikes
    assert progress.text() == f"Sorted: 3 units, {n_spikes:,} spikes"
    window.session.select_units([1, 2])
    press(qtbot, window, Qt.Key.Key_G)
    assert progress.text() == f"Sorted: 2 units, {n_spikes:,} spikes"

    codes = window.views["codes"]
    codes.plot.getAxis("left").setTicks([[(0.4, "unit 3")], []])  # what a model's rows leave behind
    with qtbot.waitSignal(window.opened, timeout=20_000):
        window.open_path(tiny_probe_recording)
    assert progress.text() == "Not started" and progress.value() == 0
    assert codes.plot.getAxis("left")._tickLevels == [[], []]
    assert window.views["training"].start_button.isEnabled()
    window.close()
    assert not shown_errors


def test_the_device_label_counts_threads_in_words():
    import torch

    from engine.model.crsae import device_description

    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert device_description(torch.device("cpu")) == "CPU (1 thread)"
    finally:
        torch.set_num_threads(previous)


def test_the_window_trains_on_as_many_threads_as_the_cli(qtbot):
    import torch

    from app.main_window import MainWindow

    before = torch.get_num_threads()
    window = MainWindow()
    qtbot.addWidget(window)
    assert torch.get_num_threads() == before
    window.close()


def test_a_saved_session_is_sparsorts_own_sort(tmp_path, phy_folder):  # noqa: F811
    from app.views.training import foreign_sort_folder
    from engine.io.phy import load_phy

    assert foreign_sort_folder(load_phy(phy_folder).to_sorting()) == phy_folder.resolve()
    session = tmp_path / "session"  # what save_session writes: settings.json beside the phy folder sorting/
    session.mkdir()
    phy_folder.rename(session / "sorting")
    (session / "settings.json").write_text("{}")
    assert foreign_sort_folder(load_phy(session / "sorting").to_sorting()) is None
