"""Training from the GUI: live updates, the buttons, the form, closing mid-run, worker errors."""

from __future__ import annotations

import numpy as np
import pytest
from PyQt6.QtCore import Qt

from app.state import TrainingState
from conftest import fill_training_form


@pytest.fixture
def shown_errors(monkeypatch):
    """Errors the window would show in a dialog, collected instead of shown."""
    errors = []
    monkeypatch.setattr("app.main_window.show_error", lambda _parent, error: errors.append(error))
    return errors


def click(qtbot, button) -> None:
    assert button.isEnabled(), f"{button.objectName()} is disabled"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_live_updates_reach_the_filters_and_training_views(window, qtbot, shown_errors):
    training, filters = window.views["training"], window.views["filters"]
    fill_training_form(window, {"n_epochs": "50", "settle_tolerance": "0"})  # long enough that we stop it ourselves
    snapshots = []
    window.session.training_snapshot.connect(snapshots.append)

    click(qtbot, training.start_button)
    qtbot.waitUntil(lambda: len(snapshots) >= 4, timeout=20_000)

    steps, losses = training.loss_curve.getData()
    assert len(steps) >= 3 and np.all(np.diff(steps) > 0)
    assert np.all(np.isfinite(losses))
    assert "Step" in training.progress.text() and "left" in training.progress.text()
    assert training.device_label.text().startswith("Device: CPU")
    # The Filters view draws the latest snapshot, not the initial filters.
    assert len(filters.cells) == len(window.session.latest_snapshot.filters) >= 1
    _, drawn = filters.cells[0].current.getData()
    _, initial = filters.cells[0].initial.getData()
    assert drawn is not None and initial is not None and len(drawn) == len(initial)
    # Channel 0 of filter 0 is the curve's first segment, scaled to the filter's peak.
    latest = window.session.latest_snapshot.filters[0]  # (n_taps, n_channels)
    segment = drawn[: latest.shape[0]]
    expected = latest[:, 0] / np.abs(latest).max()
    np.testing.assert_allclose(segment - segment.mean(), expected - expected.mean(), atol=1e-5)

    click(qtbot, training.stop_button)
    qtbot.waitUntil(lambda: window.session.training_state == TrainingState.IDLE, timeout=30_000)
    assert not shown_errors


def test_pause_resume_and_stop_buttons(window, qtbot, shown_errors):
    training = window.views["training"]
    fill_training_form(window, {"n_epochs": "50", "settle_tolerance": "0"})
    click(qtbot, training.start_button)
    qtbot.waitUntil(lambda: window.session.training_state == TrainingState.TRAINING, timeout=20_000)
    trainer = window.session.trainer.trainer
    qtbot.waitUntil(lambda: trainer.step >= 2, timeout=20_000)
    assert not training.start_button.isEnabled() and not training.resume_button.isEnabled()

    click(qtbot, training.pause_button)
    assert window.session.training_state == TrainingState.PAUSED
    assert training.resume_button.isEnabled() and not training.pause_button.isEnabled()
    # Deterministic: once the trainer waits in its pause, no step can run until Resume.
    qtbot.waitUntil(trainer.waiting_in_pause.is_set, timeout=20_000)
    paused_at = trainer.step
    qtbot.wait(50)  # let queued events run; the trainer stays blocked
    assert trainer.step == paused_at and trainer.waiting_in_pause.is_set(), "training went on while paused"

    click(qtbot, training.resume_button)
    qtbot.waitUntil(lambda: trainer.step > paused_at + 1, timeout=20_000)

    click(qtbot, training.stop_button)
    qtbot.waitUntil(lambda: window.session.training_state == TrainingState.IDLE, timeout=30_000)
    assert trainer.step < trainer.n_steps, "Stop did not end training early"
    # Stopping still sorts with what was learned.
    assert window.session.sorting is not None and window.session.unit_table is not None
    assert training.start_button.isEnabled()
    assert not shown_errors


def test_closing_during_training_stops_the_worker(window, qtbot):
    fill_training_form(window, {"n_epochs": "50", "settle_tolerance": "0"})
    click(qtbot, window.views["training"].start_button)
    qtbot.waitUntil(lambda: window.session.training_state == TrainingState.TRAINING, timeout=20_000)
    threads = list(window.engine.threads.running())
    assert threads, "training should run in a worker thread"

    window.close()

    assert not window.isVisible()
    assert all(thread.isFinished() for thread in threads)
    assert window.engine.threads.running() == []


def test_impossible_hyperparameters_are_refused(window, qtbot):
    training = window.views["training"]
    fill_training_form(window, {"n_filters": "0"})
    assert not training.start_button.isEnabled()
    assert "n_filters" in training.message.text() and "between 1 and" in training.message.text()
    assert training.fields["n_filters"].property("invalid") is True

    fill_training_form(window, {"n_filters": "3", "learning_rate": "fast"})
    assert "learning_rate must be a number" in training.message.text()
    assert not training.start_button.isEnabled()
    qtbot.mouseClick(training.start_button, Qt.MouseButton.LeftButton)
    assert window.session.training_state == TrainingState.IDLE

    fill_training_form(window, {"learning_rate": "0.01"})
    assert training.message.text() == ""
    assert training.start_button.isEnabled()
    assert window.session.training_config.n_filters == 3


def test_an_error_in_the_worker_is_shown_and_the_app_keeps_running(window, qtbot, shown_errors, monkeypatch):
    from engine.pipeline.training import Trainer

    def diverge(self):
        raise FloatingPointError("training loss became nan at step 1")

    monkeypatch.setattr(Trainer, "train_step", diverge)
    click(qtbot, window.views["training"].start_button)
    qtbot.waitUntil(lambda: len(shown_errors) > 0, timeout=20_000)
    qtbot.waitUntil(lambda: window.session.training_state == TrainingState.IDLE, timeout=10_000)

    error = shown_errors[0]
    assert error.title == "Training failed"
    assert "nan" in error.message and "learning rate" in error.advice
    assert window.session.recording is not None
    assert window.views["training"].start_button.isEnabled()
    assert not window.engine.is_training


def test_empty_optional_fields_say_what_they_default_to(window):
    training = window.views["training"]
    assert training.fields["n_filters"].placeholderText() == "8 per channel (4 from noise)"
    assert training.fields["n_taps"].placeholderText() == "4 ms"


def test_the_start_from_choice_reaches_the_training_config(window):
    training = window.views["training"]
    assert training.init_box.currentData() == "data"
    training.init_box.setCurrentIndex(training.init_box.findData("random"))
    assert window.session.training_config.init == "random"
    assert training.config().init == "random"


def test_the_whitening_choice_reaches_the_training_config_and_follows_a_given_one(window):
    from engine.pipeline.training import TrainingConfig

    training = window.views["training"]
    assert training.whiten_box.currentData() == "auto"
    assert training.config().whiten is None  # automatic: by the probe's channel count
    training.whiten_box.setCurrentIndex(training.whiten_box.findData("off"))
    assert window.session.training_config.whiten is False
    assert training.config().whiten is False

    training._show_config(TrainingConfig(whiten=True))  # as a session or the launcher's flags give it
    assert training.whiten_box.currentData() == "on"
    assert training.config().whiten is True


def test_the_motion_correction_choice_reaches_the_training_config_and_follows_a_given_one(window):
    from engine.pipeline.training import TrainingConfig

    training = window.views["training"]
    assert training.motion_box.currentData() == "off"
    assert training.config().motion == "off"
    training.motion_box.setCurrentIndex(training.motion_box.findData("nonrigid"))
    assert window.session.training_config.motion == "nonrigid"
    assert training.config().motion == "nonrigid"

    training._show_config(TrainingConfig(motion="rigid"))  # as a session or the launcher's flags give it
    assert training.motion_box.currentData() == "rigid"
    assert training.config().motion == "rigid"


def test_curves_show_the_held_out_error_and_the_error_to_the_truth_when_known(window, tmp_path):
    from engine.pipeline.training import TrainingSnapshot

    training = window.views["training"]
    filters = np.zeros((2, 8, 1), np.float32)

    def snapshot(step, heldout, truth):
        return TrainingSnapshot(step, 10, 1.0, filters, 0.1, 1.0, 1.0, heldout, truth)

    for step, heldout in [(1, 0.9), (2, 0.9), (3, 0.8)]:  # one measure repeats until the next
        window.session.add_snapshot(snapshot(step, heldout, None))
    steps, values = training.heldout_curve.getData()
    assert list(steps) == [1.0, 3.0]
    assert not training.truth_plot.isVisible()  # a recording without known shapes

    for step, error in [(4, 0.7), (5, 0.3)]:
        window.session.add_snapshot(snapshot(step, 0.7, error))
    steps, values = training.truth_curve.getData()
    assert list(steps) == [4.0, 5.0] and list(values) == [0.7, 0.3]
    assert training.truth_plot.isVisible()
    assert training.truth_plot.getAxis("bottom").isVisible() and not training.change_plot.getAxis("bottom").isVisible()
    training.grab().save(str(tmp_path / "training.png"))


def test_training_that_settles_early_shows_done_and_a_step_axis_of_its_length(window, qtbot, shown_errors):
    """'Settle at': training ends when the shapes settle; the view says done, not stopped, and its
    step axis shrinks to the steps run."""
    training = window.views["training"]
    fill_training_form(window, {"n_epochs": "5", "settle_tolerance": "1"})  # anything settles at the 5th step
    snapshots = []
    window.session.training_snapshot.connect(snapshots.append)
    click(qtbot, training.start_button)
    qtbot.waitUntil(lambda: window.session.training_state == TrainingState.IDLE and bool(snapshots), timeout=60_000)
    last = snapshots[-1]
    assert last.step == last.n_steps == 5
    planned = window.session.trainer.trainer
    assert planned.settled_at == 5
    assert training.loss_plot.getViewBox().viewRange()[0][1] < 6  # was the planned run's length
    assert not shown_errors


def test_a_config_given_while_the_training_view_was_hidden_survives_opening_a_recording(qtbot, tiny_recording):
    from dataclasses import replace

    from app.main_window import MainWindow
    from engine.pipeline.training import TrainingConfig

    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    window.docks["training"].close()  # as the launcher's flags may find it: hidden, its form not loaded
    given = replace(TrainingConfig(), n_iterations=7, batch_size=5)
    window.session.set_training_config(given)
    with qtbot.waitSignal(window.opened, timeout=20_000):
        window.open_path(tiny_recording)
    assert window.session.training_config.n_iterations == 7 and window.session.training_config.batch_size == 5
    window.docks["training"].show()
    assert window.views["training"].fields["n_iterations"].text() == "7"
    window.close()


def test_opening_a_recording_loads_what_training_imports_before_train_is_pressed(qtbot, tiny_recording, monkeypatch):
    # The t-SNE map's first import (openTSNE and scikit-learn, 1-2 s) froze the GUI mid-training;
    # with a recording open, the app imports them in the background before anyone presses Train.
    import threading

    import app.warm_up as warm_up
    from conftest import open_window

    monkeypatch.setattr(warm_up, "_thread", None)  # as in a fresh process
    monkeypatch.setattr(warm_up, "_done", threading.Event())
    imported = []
    monkeypatch.setattr(warm_up, "_import", imported.append)
    main_window = open_window(qtbot, tiny_recording)
    try:
        qtbot.waitUntil(lambda: warm_up.warm_up_finished(), timeout=10_000)
        assert imported == list(warm_up.MODULES)
        assert main_window.session.training_state == TrainingState.IDLE  # nothing else started
    finally:
        main_window.close()


def test_a_flat_channel_is_filled_and_the_status_bar_says_so(qtbot, tmp_path, shown_errors):
    import json

    from conftest import open_window
    from engine.evaluation.simulator import write_simulation

    paths = write_simulation(tmp_path, duration_s=3.0, n_units=2, sampling_rate=10_000.0, n_channels=4,
                             firing_rates=20.0, seed=3)
    sidecar = json.loads(paths.recording.with_suffix(".json").read_text())
    samples = np.memmap(paths.recording, dtype=sidecar["dtype"], mode="r+").reshape(-1, 4)
    samples[:, 2] = 0  # a broken contact
    samples.flush()
    del samples
    window = open_window(qtbot, paths.recording)
    click(qtbot, window.views["training"].start_button)
    qtbot.waitUntil(lambda: window.session.training_state == TrainingState.TRAINING, timeout=20_000)
    assert "1 flat channel (2: noise under 0.1 x the probe's median" in window.status_label.text()
    assert "filled from their neighbours" in window.status_label.text()
    click(qtbot, window.views["training"].stop_button)
    qtbot.waitUntil(lambda: window.session.training_state == TrainingState.IDLE, timeout=30_000)
    assert not shown_errors
    window.close()
